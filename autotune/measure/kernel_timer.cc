// The VM instrument that times every call in place, in C++: no Python between kernels.
// Before a call it pushes a timestamp; after it adds the elapsed time to the call's symbol.
// One VM is instrumented at a time, from the thread that runs it (the VM calls it inline).
#include <tvm/ffi/function.h>
#include <tvm/ffi/string.h>

#include <chrono>
#include <sstream>
#include <string>
#include <unordered_map>
#include <vector>

namespace {
using Clock = std::chrono::steady_clock;
struct Total { double seconds = 0; long calls = 0; };
std::vector<Clock::time_point> started;
std::unordered_map<std::string, Total> totals;

tvm::ffi::Function Instrument() {
  return tvm::ffi::Function::FromPacked([](tvm::ffi::PackedArgs args, tvm::ffi::Any* rv) {
    bool before = args[2].cast<bool>();
    if (before) {
      started.push_back(Clock::now());
    } else {
      auto now = Clock::now();
      Total& total = totals[args[1].cast<tvm::ffi::String>()];
      total.seconds += std::chrono::duration<double>(now - started.back()).count();
      total.calls += 1;
      started.pop_back();
    }
    *rv = 0;
  });
}

// "symbol<TAB>seconds<TAB>calls" lines; then the totals start again.
tvm::ffi::String Take() {
  std::ostringstream out;
  out.precision(17);
  for (const auto& [name, total] : totals) out << name << '\t' << total.seconds << '\t' << total.calls << '\n';
  totals.clear();
  started.clear();
  return out.str();
}
}  // namespace

TVM_FFI_DLL_EXPORT_TYPED_FUNC(instrument, Instrument);
TVM_FFI_DLL_EXPORT_TYPED_FUNC(take, Take);
