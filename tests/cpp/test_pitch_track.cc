// pitch_track.h: the fundamental of harmonic buzzes from 75 Hz to 740 Hz, no pitch in noise,
// silence or a constant, frames cut where the header says, and the errors.
#include <cmath>
#include <stdexcept>
#include <vector>

#include "check.h"
#include "pitch_track.h"

using namespace streamtag;
using namespace streamtag_test;

namespace {

constexpr double kPi = 3.14159265358979323846;

// n samples at 16 kHz of a buzz at hz: harmonics falling 6 dB an octave, none from 4 kHz up.
std::vector<float> Buzz(double hz, int n) {
  std::vector<float> x(n, 0.0f);
  for (int k = 1; k <= 6 && k * hz < 4000; ++k) {
    for (int j = 0; j < n; ++j) x[j] += static_cast<float>(0.3 * std::sin(2 * kPi * k * hz * j / 16000) / k);
  }
  return x;
}

void TestAHarmonicBuzzHasItsFundamental() {
  for (double hz : {75.0, 110.0, 220.0, 523.25, 740.0}) {
    const std::vector<float> x = Buzz(hz, 1152);
    float rows[2 * kPitchRowSize];
    PitchFrames(x.data(), 1, 1152, rows);
    for (int f = 0; f < 2; ++f) {
      const float *row = rows + f * kPitchRowSize;
      Check(std::fabs(row[kPitchSemitones] - 12 * std::log2(hz / 100)) < 0.1,
            "the fundamental within a tenth of a semitone at " + std::to_string(hz) + " Hz");
      Check(row[kPitchDifference] < 0.2, "voiced at " + std::to_string(hz) + " Hz");
      Check(row[kPitchLevelDb] > -20 && row[kPitchLevelDb] < -10, "its level");
    }
  }
}

void TestNoiseSilenceAndAConstantHaveNoPitch() {
  const std::vector<float> noise = Noise(1152 * 20, 5);
  std::vector<float> rows(20 * 2 * kPitchRowSize);
  PitchFrames(noise.data(), 20, 1152, rows.data());
  int voiced = 0;
  for (int f = 0; f < 40; ++f) voiced += rows[f * kPitchRowSize + kPitchDifference] < 0.2;
  Check(voiced <= 2, "white noise is unvoiced");
  for (float value : {0.0f, 0.5f}) {
    const std::vector<float> still(1152, value);
    float row[2 * kPitchRowSize];
    PitchFrames(still.data(), 1, 1152, row);
    Check(row[kPitchDifference] == 1.0f && row[kPitchRowSize + kPitchDifference] == 1.0f,
          "silence and a constant have no pitch");
    Check(row[kPitchLevelDb] == static_cast<float>(10 * std::log10(1e-12)), "and no power");
  }
}

void TestFramesAndErrors() {
  Check(PitchFramesPerBlock(1152) == 2, "a step after 128 samples: two frames");
  Check(PitchFramesPerBlock(640) == 1, "one frame's worth: one");
  Check(PitchFramesPerBlock(1152 + 512) == 3, "a hop more (512 samples at 16 kHz): a frame more");
  CheckThrows<std::invalid_argument>([] { PitchFramesPerBlock(1153); }, "an odd block");
  CheckThrows<std::invalid_argument>([] { PitchFramesPerBlock(638); }, "a block too short");
  float row[kPitchRowSize];
  CheckThrows<std::invalid_argument>([&] { PitchFrames(nullptr, -1, 1152, row); }, "n < 0");
  PitchFrames(nullptr, 0, 1152, row);  // no blocks: nothing read or written
  Check(true, "no blocks");
  // the second frame starts a hop (512 samples at 16 kHz) in: a buzz that changes there
  std::vector<float> x = Buzz(200, 1152);
  const std::vector<float> up = Buzz(300, 1152);
  for (int j = 512; j < 1152; ++j) x[j] = up[j];
  float rows[2 * kPitchRowSize];
  PitchFrames(x.data(), 1, 1152, rows);
  Check(std::fabs(rows[kPitchRowSize + kPitchSemitones] - 12 * std::log2(3.0)) < 0.1,
        "the second frame reads from sample 512 on");
}

}  // namespace

int main() {
  TestAHarmonicBuzzHasItsFundamental();
  TestNoiseSilenceAndAConstantHaveNoPitch();
  TestFramesAndErrors();
  return Summary("test_pitch_track");
}
