// fft.h: the real-input FFT against a plain DFT at sizes of every radix, and its four-lane
// form bitwise against the single one.
#include <cmath>
#include <complex>
#include <string>
#include <vector>

#include "check.h"
#include "fft.h"

using namespace streamtag;
using namespace streamtag_test;

namespace {

void TestRealFftAgainstDft() {
  std::vector<int> sizes;
  for (int n = 2; n <= 80; ++n) sizes.push_back(n);
  for (int n : {128, 250, 256, 400, 486, 512, 1000, 1024, 2018, 2048}) sizes.push_back(n);
  for (int n : sizes) {
    const std::vector<float> x = Noise(n, n);
    RealFft fft(n);
    std::vector<float> re(fft.NumBins()), im(fft.NumBins());
    fft.Forward(x.data(), re.data(), im.data());
    double worst = 0;
    for (int k = 0; k < fft.NumBins(); ++k) {
      std::complex<double> acc = 0;
      for (int j = 0; j < n; ++j) acc += double(x[j]) * std::polar(1.0, -2 * M_PI * j * k / n);
      worst = std::max(worst, std::abs(acc - std::complex<double>(re[k], im[k])));
    }
    Check(worst < 1e-5 * std::sqrt(n) * std::log2(n + 1.0), "rfft size " + std::to_string(n));

    // Four lanes give bitwise the single transform's numbers.
    std::vector<V4> in(n), re4(fft.NumBins()), im4(fft.NumBins());
    for (int j = 0; j < n; ++j) in[j] = V4{x[j], 0.5f * x[j], -x[j], x[j]};
    fft.Forward4(in.data(), re4.data(), im4.data());
    bool same = true;
    for (int k = 0; k < fft.NumBins(); ++k) same &= re4[k][0] == re[k] && im4[k][0] == im[k];
    for (int k = 0; k < fft.NumBins(); ++k) same &= re4[k][3] == re[k] && im4[k][3] == im[k];
    Check(same, "rfft four lanes equal single, size " + std::to_string(n));
  }
}

}  // namespace

int main() {
  TestRealFftAgainstDft();
  return Summary("test_fft");
}
