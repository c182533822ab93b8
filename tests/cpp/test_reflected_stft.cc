// reflected_stft.h: magnitudes against a plain DFT of the reflected, windowed frames, with
// frames in groups of four and one left over; and the errors.
#include <cmath>
#include <complex>
#include <stdexcept>
#include <string>
#include <vector>

#include "check.h"
#include "reflected_stft.h"

using namespace streamtag;
using namespace streamtag_test;

namespace {

void TestAgainstDft() {
  const int n = 32, length = 160, hop = 16, pad = 8, rows = 3;
  std::vector<float> window(n);
  for (int j = 0; j < n; ++j) window[j] = float(0.5 - 0.5 * std::cos(2 * M_PI * j / n));
  ReflectedStft stft(window, length, hop, pad);
  const int frames = (length + pad - n) / hop + 1;
  Check(stft.NumFrames() == frames && frames % 4 != 0, "frames: " + std::to_string(frames));
  const std::vector<float> x = Noise(size_t(rows * length), 7);
  std::vector<float> out(size_t(rows * stft.NumBins() * frames));
  stft.Magnitudes(x.data(), rows, out.data());
  double worst = 0;
  for (int r = 0; r < rows; ++r) {
    std::vector<double> padded(x.begin() + r * length, x.begin() + (r + 1) * length);
    for (int j = 0; j < pad; ++j) padded.push_back(x[r * length + length - 2 - j]);
    for (int f = 0; f < frames; ++f) {
      for (int k = 0; k < stft.NumBins(); ++k) {
        std::complex<double> acc = 0;
        for (int j = 0; j < n; ++j) {
          acc += padded[f * hop + j] * window[j] * std::polar(1.0, -2 * M_PI * j * k / n);
        }
        const float got = out[(size_t(r) * stft.NumBins() + k) * frames + f];
        worst = std::max(worst, std::fabs(std::abs(acc) - got));
      }
    }
  }
  Check(worst < 1e-4, "magnitudes within 1e-4 of the DFT's: " + std::to_string(worst));
}

void TestErrors() {
  const std::vector<float> window(16, 1.0f);
  CheckThrows<std::invalid_argument>([&] { ReflectedStft(window, 8, 4, 4); },
                                     "rows shorter than a frame");
  CheckThrows<std::invalid_argument>([&] { ReflectedStft(window, 20, 0, 4); }, "hop 0");
  CheckThrows<std::invalid_argument>([&] { ReflectedStft(window, 20, 4, 20); },
                                     "reflection past the row's start");
  CheckThrows<std::invalid_argument>([&] { ReflectedStft(std::vector<float>(1), 20, 4, 4); },
                                     "a window of one sample");
}

}  // namespace

int main() {
  TestAgainstDft();
  TestErrors();
  return Summary("test_reflected_stft");
}
