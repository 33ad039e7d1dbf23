#!/usr/bin/env bash
# Re-captures fixtures/traces/linux-6.1-ic.hvtrace: the test kernel (build-test-kernel.sh) on
# hvemu's KVM path with hv_vmbus and hv_utils as the client — VMBus negotiation, the IC
# offers and opens, three heartbeats, a time sample, a shutdown — recorded by the boot test of
# `npm run test:linux`, which also replays it. Needs /dev/kvm.
set -euo pipefail
cd "$(dirname "$0")/.."
npx tsc -b
HVEMU_LINUX_TRACE_OUT="$PWD/fixtures/traces/linux-6.1-ic.hvtrace" \
  npx vitest run --config vitest.linux.config.ts -t 'hv_vmbus negotiates'
ls -l fixtures/traces/linux-6.1-ic.hvtrace
