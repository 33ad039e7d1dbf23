{
  # Builds hvemu_native.node, the native core under @hvemu/accel (see packages/accel/README.md).
  # Linux x86-64 has the KVM backend; elsewhere a stub that reports "no backend" is built so
  # installs still succeed. MSHV/WHPX sources join as their own conditions later.
  "targets": [
    {
      "target_name": "hvemu_native",
      "include_dirs": ["<!(node -p \"require('node-addon-api').include_dir\")"],
      # NODE_ADDON_API_CPP_EXCEPTIONS_ALL: a C++ exception other than Napi::Error (std::bad_alloc,
      # std::system_error from std::thread) becomes a JS error instead of std::terminate.
      "defines": ["NAPI_VERSION=8", "NAPI_CPP_EXCEPTIONS", "NODE_ADDON_API_DISABLE_DEPRECATED", "NODE_ADDON_API_CPP_EXCEPTIONS_ALL"],
      "cflags!": ["-fno-exceptions"],
      "cflags_cc!": ["-fno-exceptions", "-fno-rtti"],
      "cflags_cc": ["-std=c++17", "-fexceptions", "-Wall", "-Wextra", "-Wno-unused-parameter", "-Wno-missing-field-initializers"],
      "xcode_settings": { "GCC_ENABLE_CPP_EXCEPTIONS": "YES" },
      "msvs_settings": { "VCCLCompilerTool": { "ExceptionHandling": 1 } },
      "conditions": [
        ["OS=='linux' and target_arch=='x64'", {
          "sources": [
            "src/addon.cc",
            "src/eventfd_watcher.cc",
            "src/exit_channel.cc",
            "src/file_io.cc",
            "src/frame_io.cc",
            "src/frame_writer.cc",
            "src/guest_ram.cc",
            "src/kvm_partition.cc",
            "src/kvm_vcpu.cc",
            "src/page_map.cc",
            "src/syscall_entry.cc",
            "src/x86_decode.cc",
            "src/x87_state.cc"
          ]
        }, {
          "sources": ["src/addon_stub.cc"]
        }]
      ]
    }
  ]
}
