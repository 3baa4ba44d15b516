// Input validation shared by every backend: run before any work so that bad input never produces partial output.
#include <cmath>
#include <cstdint>
#include <cstring>
#include <sstream>

#include "time_edit/solver.hpp"

namespace time_edit {
namespace {

[[noreturn]] void fail(const std::string& message) { throw Error(Error::Kind::InvalidArgument, message); }

// True when every value is finite: an integer test of the exponent bits, which compilers vectorise (a loop of
// std::isfinite with an early exit does not vectorise, and this runs over every input of every call).
bool allFinite(const float* data, int64_t count) {
  uint32_t bad = 0;
  for (int64_t i = 0; i < count; ++i) {
    uint32_t bits;
    std::memcpy(&bits, data + i, sizeof bits);
    bad |= static_cast<uint32_t>((bits & 0x7f800000u) == 0x7f800000u);
  }
  return bad == 0;
}

void checkFinite(const float* data, int64_t count, int64_t d, int64_t edit, const char* what) {
  if (allFinite(data, count)) return;
  for (int64_t i = 0; i < count; ++i) {
    if (!std::isfinite(data[i])) {
      std::ostringstream msg;
      msg << "edit " << edit << ": " << what << " contains a non-finite value (" << data[i] << ") at row " << i / d
          << ", column " << i % d;
      fail(msg.str());
    }
  }
}

}  // namespace

void validateEdits(int64_t d, const EditRows* edits, int64_t count) {
  if (d < 1) fail("d (the embedding width) must be ≥ 1, got " + std::to_string(d));
  if (count < 0) fail("the number of edits must be ≥ 0, got " + std::to_string(count));
  if (count > 0 && edits == nullptr) fail("edits is null");
  for (int64_t b = 0; b < count; ++b) {
    const EditRows& e = edits[b];
    const std::string at = "edit " + std::to_string(b) + ": ";
    if (e.rows < 1) fail(at + "rows (n) must be ≥ 1, got " + std::to_string(e.rows));
    if (e.source == nullptr) fail(at + "source is null");
    if (e.destination == nullptr) fail(at + "destination is null");
    if (!std::isfinite(e.lambda) || !(e.lambda > 0.0)) {
      std::ostringstream msg;
      msg << at << "lambda must be finite and > 0, got " << e.lambda;
      fail(msg.str());
    }
    checkFinite(e.source, e.rows * d, d, b, "source");
    checkFinite(e.destination, e.rows * d, d, b, "destination");
  }
}

}  // namespace time_edit
