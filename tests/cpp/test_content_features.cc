// content_features.h: features with known values on frames made for them, and the errors.
#include <cmath>
#include <stdexcept>
#include <string>
#include <vector>

#include "check.h"
#include "content_features.h"

using namespace streamtag;
using namespace streamtag_test;

namespace {

std::vector<double> Features(const std::vector<float> &frames, int bands, double rate = 31.25) {
  std::vector<double> out(kContentFeatureCount);
  ContentFeatures(frames.data(), int64_t(frames.size()) / bands, bands, rate, out.data());
  return out;
}

bool Near(double a, double b, double tol = 1e-9) { return std::fabs(a - b) <= tol; }

void TestSteadyFlatFrames() {
  // every band at -20 dB in every frame: no change, no peak, perfectly flat
  const int bands = 64, frames = 40;
  const std::vector<double> f = Features(std::vector<float>(bands * frames, -20.0f), bands);
  Check(Near(f[0], 0.0), "a steady level has no modulation");
  Check(f[1] == 0.0 && f[9] == 0.0, "no low-energy frames, no pauses");
  Check(f[2] == 0.0 && Near(f[3], 0.0), "no flux");
  Check(Near(f[4], 1.0, 1e-6) && Near(f[5], 0.0, 1e-6), "flat spectrum: flatness 1, std 0");
  Check(f[6] == 0.0 && Near(f[7], 0.0, 1e-9) && Near(f[8], 0.0, 1e-6),
        "no peaks, steady level and centroid");
}

void TestAHeldPeakPersists() {
  // band 10 stands 20 dB over the rest in every frame: a held note
  const int bands = 64, frames = 40;
  std::vector<float> x(bands * frames, -40.0f);
  for (int t = 0; t < frames; ++t) x[t * bands + 10] = -20.0f;
  const std::vector<double> f = Features(x, bands);
  Check(f[6] == 1.0, "a peak held for the whole window persists: " + std::to_string(f[6]));
  Check(f[4] < 0.5, "one strong band is not flat: " + std::to_string(f[4]));
}

void TestSyllablesModulateAtFourHertz() {
  // the level rises and falls 4 times a second (frames at 31.25 a second): syllables
  const int bands = 16, frames = 125;
  std::vector<float> x(bands * frames);
  for (int t = 0; t < frames; ++t) {
    const float level = -30.0f + 20.0f * float(std::sin(2 * M_PI * 4.0 * t / 31.25));
    for (int b = 0; b < bands; ++b) x[t * bands + b] = level;
  }
  const std::vector<double> f = Features(x, bands);
  Check(f[0] > 0.9, "4-Hz modulation is in the syllable band: " + std::to_string(f[0]));
  Check(f[9] > 0.2, "the troughs are pauses: " + std::to_string(f[9]));
}

void TestErrors() {
  std::vector<float> x(64, 0.0f);
  double out[kContentFeatureCount];
  CheckThrows<std::invalid_argument>([&] { ContentFeatures(x.data(), 1, 64, 31.25, out); },
                                     "one frame");
  CheckThrows<std::invalid_argument>([&] { ContentFeatures(x.data(), 2, 32, 0.0, out); },
                                     "a frame rate of 0");
  x[5] = NAN;
  CheckThrows<std::invalid_argument>([&] { ContentFeatures(x.data(), 2, 32, 31.25, out); },
                                     "a NaN");
}

void TestPulse() {
  // a frame rate of 10: lags 3 to 15 frames. Onsets every 5 frames: a beat at lag 5.
  const int bands = 4, frames = 100;
  std::vector<float> beat(bands * frames, -40.0f), flat(bands * frames, -40.0f);
  for (int t = 0; t < frames; t += 5) {
    for (int b = 0; b < bands; ++b) beat[t * bands + b] = -10.0f;
  }
  const double pulse = ContentPulse(beat.data(), frames, bands, 10.0);
  Check(pulse > 0.8, "onsets every half second: a strong pulse, got " + std::to_string(pulse));
  Check(ContentPulse(flat.data(), frames, bands, 10.0) == 0.0, "a steady spectrum: no pulse");
  std::vector<float> noise = Noise(bands * frames, 5);
  for (float &v : noise) v = v * 30.0f - 40.0f;
  Check(ContentPulse(noise.data(), frames, bands, 10.0) < 0.4, "random frames: a weak pulse");
  Check(ContentPulse(beat.data(), 5, bands, 10.0) == 0.0, "too few frames for any lag: 0");
  // the same beat entering from digital silence (-100 dB): the entry is one onset, capped
  std::vector<float> entering(beat);
  for (int t = 0; t < 3; ++t) {
    for (int b = 0; b < bands; ++b) entering[t * bands + b] = -100.0f;
  }
  const double entered = ContentPulse(entering.data(), frames, bands, 10.0);
  Check(entered > 0.85,
        "a beat after silence keeps its pulse (0.76 uncapped), got " + std::to_string(entered));
  CheckThrows<std::invalid_argument>([&] { ContentPulse(beat.data(), 1, bands, 10.0); },
                                     "one frame");
  CheckThrows<std::invalid_argument>([&] { ContentPulse(beat.data(), frames, bands, 0.0); },
                                     "a frame rate of 0");
  beat[7] = NAN;
  CheckThrows<std::invalid_argument>([&] { ContentPulse(beat.data(), frames, bands, 10.0); },
                                     "a NaN");
}

}  // namespace

int main() {
  TestPulse();
  TestSteadyFlatFrames();
  TestAHeldPeakPersists();
  TestSyllablesModulateAtFourHertz();
  TestErrors();
  return Summary("test_content_features");
}
