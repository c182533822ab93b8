// mel_filterbank.h: a filter left empty by too few FFT bins is refused. (The filters'
// numbers are compared with librosa's in tests/test_frontend.py.)
#include <stdexcept>

#include "check.h"
#include "log_mel_options.h"
#include "mel_filterbank.h"

using namespace streamtag;
using namespace streamtag_test;

namespace {

void TestErrors() {
  CheckThrows<std::invalid_argument>([] {
    LogMelOptions o;
    o.n_fft = 128;
    o.n_mels = 128;
    MelFilterbank bank(o);
  }, "empty mel filter");
}

}  // namespace

int main() {
  TestErrors();
  return Summary("test_mel_filterbank");
}
