{
  # Builds hvemu_native.node, the native core under @hvemu/accel.
  # Linux x86-64 only for now; MSHV/WHPX sources join as their own targets/conditions later.
  "targets": [
    {
      "target_name": "hvemu_native",
      "sources": [
        "src/addon.cc",
        "src/exit_channel.cc",
        "src/guest_ram.cc",
        "src/kvm_partition.cc",
        "src/kvm_vcpu.cc"
      ],
      "include_dirs": ["<!(node -p \"require('node-addon-api').include_dir\")"],
      "defines": ["NAPI_VERSION=8", "NAPI_CPP_EXCEPTIONS", "NODE_ADDON_API_DISABLE_DEPRECATED"],
      "cflags!": ["-fno-exceptions"],
      "cflags_cc!": ["-fno-exceptions", "-fno-rtti"],
      "cflags_cc": ["-std=c++17", "-fexceptions", "-Wall", "-Wextra", "-Wno-unused-parameter", "-Wno-missing-field-initializers"]
    }
  ]
}
