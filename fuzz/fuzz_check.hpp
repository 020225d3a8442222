// SPDX-License-Identifier: Apache-2.0
#pragma once

// What the fuzz targets share: how a broken invariant is reported. libFuzzer counts an abort as
// a crash and saves the input that caused it; the message says which promise was broken.

#include <cstdio>
#include <cstdlib>

namespace tstitch::fuzz {

/// Reports a finding that is not a sanitizer's (an invariant of a successful parse that does not
/// hold) and aborts, so that libFuzzer records the input.
[[noreturn]] inline void finding(const char* target, const char* what) {
  std::fprintf(stderr, "tstitch fuzz finding in %s: %s\n", target, what);
  std::abort();
}

/// Checks an invariant; see finding().
inline void expect(bool condition, const char* target, const char* what) {
  if (!condition)
    finding(target, what);
}

} // namespace tstitch::fuzz
