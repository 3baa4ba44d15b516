// The tally of the C++ test programs: every expect() counts a check, a failed one prints its description, and
// the program's exit code (finish()) is nonzero when any failed.
#pragma once

#include <cstdio>
#include <string>

namespace time_edit::testing {

struct Tally {
  int checks = 0;
  int failures = 0;
};

inline Tally& tally() {
  static Tally t;
  return t;
}

inline void expect(bool ok, const std::string& what) {
  ++tally().checks;
  if (!ok) {
    ++tally().failures;
    std::printf("FAIL: %s\n", what.c_str());
  }
}

// Records a failure that is not a comparison (an unexpected exception).
inline void fail(const std::string& what) { expect(false, what); }

// Prints "N checks, M failures"; the exit code for main().
inline int finish() {
  std::printf("%d checks, %d failures\n", tally().checks, tally().failures);
  return tally().failures == 0 ? 0 : 1;
}

}  // namespace time_edit::testing
