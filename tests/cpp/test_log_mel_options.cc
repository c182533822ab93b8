// log_mel_options.h: options that Validate refuses, and an unknown preset.
#include <stdexcept>

#include "check.h"
#include "log_mel_options.h"

using namespace streamtag;
using namespace streamtag_test;

namespace {

void TestErrors() {
  CheckThrows<std::invalid_argument>([] {
    LogMelOptions o;
    o.fmax = 9000;
    o.Validate();
  }, "fmax above Nyquist");
  CheckThrows<std::invalid_argument>([] {
    LogMelOptions o;
    o.win_length = 1024;
    o.Validate();
  }, "win_length above n_fft");
  CheckThrows<std::invalid_argument>([] { LogMelOptions::Preset("nope"); }, "unknown preset");
}

}  // namespace

int main() {
  TestErrors();
  return Summary("test_log_mel_options");
}
