// loudness_meter.h: BS.1770's K-weighting table, EBU Tech 3341's -23 LUFS tone, chunked ==
// whole and planar == interleaved bitwise, non-finite samples, the error paths.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#include "check.h"
#include "loudness_meter.h"

using namespace streamtag;
using namespace streamtag_test;

namespace {

// The block powers of frames x channels samples fed in the given chunk lengths (the rest in
// one), popped after every chunk.
std::vector<double> LoudnessBlocks(double sample_rate, const std::vector<double> &weights,
                                   const std::vector<float> &x, bool planar,
                                   const std::vector<int64_t> &chunks) {
  LoudnessMeter meter(sample_rate, weights);
  const int64_t channels = static_cast<int64_t>(weights.size());
  const int64_t frames = static_cast<int64_t>(x.size()) / channels;
  std::vector<double> out;
  std::vector<float> part;
  int64_t done = 0;
  auto feed = [&](int64_t n) {
    n = std::min(n, frames - done);
    if (planar) {  // a chunk of planar audio is a run of each plane, copied together
      part.assign(static_cast<size_t>(n * channels), 0.0f);
      for (int64_t c = 0; c < channels; ++c) {
        std::copy_n(x.data() + c * frames + done, n, part.data() + c * n);
      }
      meter.AcceptWaveform(part.data(), n, true);
    } else {
      meter.AcceptWaveform(x.data() + done * channels, n);
    }
    done += n;
    const size_t old = out.size();
    out.resize(old + static_cast<size_t>(meter.BlocksReady()));
    meter.PopBlocks(out.data() + old, meter.BlocksReady());
  };
  for (int64_t n : chunks) feed(n);
  feed(frames - done);
  return out;
}

void TestLoudnessMeter() {
  // BS.1770-4's K-weighting table at 48 kHz.
  Biquad shelf, high_pass;
  KWeighting(48000.0, &shelf, &high_pass);
  const double want_shelf[5] = {1.53512485958697, -2.69169618940638, 1.19839281085285,
                                -1.69065929318241, 0.73248077421585};
  const double got_shelf[5] = {shelf.b0, shelf.b1, shelf.b2, shelf.a1, shelf.a2};
  const double want_high_pass[5] = {1.0, -2.0, 1.0, -1.99004745483398, 0.99007225036621};
  const double got_high_pass[5] = {high_pass.b0, high_pass.b1, high_pass.b2, high_pass.a1,
                                   high_pass.a2};
  bool table = true;
  for (int i = 0; i < 5; ++i) {
    table &= std::fabs(got_shelf[i] - want_shelf[i]) < 1e-8 &&
             std::fabs(got_high_pass[i] - want_high_pass[i]) < 1e-8;
  }
  Check(table, "K-weighting at 48 kHz is BS.1770's table");

  // EBU Tech 3341 case 1, shortened: a 1 kHz sine of -23 dBFS in both channels reads -23.0.
  for (double rate : {48000.0, 44100.0}) {
    const int64_t frames = static_cast<int64_t>(2 * rate);
    std::vector<float> tone(static_cast<size_t>(2 * frames));
    const double amplitude = std::pow(10.0, -23.0 / 20.0);
    const double step = 2 * 3.14159265358979323846 * 1000.0 / rate;  // radians per sample
    for (int64_t i = 0; i < frames; ++i) {
      tone[2 * i] = tone[2 * i + 1] =
          static_cast<float>(amplitude * std::sin(step * static_cast<double>(i)));
    }
    const std::vector<double> blocks = LoudnessBlocks(rate, {1.0, 1.0}, tone, false, {});
    double mean = 0.0;
    for (size_t k = 4; k < blocks.size(); ++k) {  // the first 400 ms: the filters settle
      mean += blocks[k] / static_cast<double>(blocks.size() - 4);
    }
    Check(blocks.size() == 20 && std::fabs(LoudnessOfPower(mean) + 23.0) < 0.1,
          "-23 dBFS stereo sine reads -23 LUFS at " + std::to_string(rate) + " Hz, got " +
              std::to_string(LoudnessOfPower(mean)));
  }

  // Chunked == whole and planar == interleaved, bitwise; one channel, two (the paired path)
  // and three (paired and single).
  std::mt19937 rng(11);
  for (int channels : {1, 2, 3}) {
    const double rate = 44100.0;
    const int64_t frames = 13000;  // 2 blocks of 4410 and a partial one
    const std::vector<float> x = Noise(static_cast<size_t>(frames * channels), 40 + channels);
    std::vector<float> planar(x.size());
    for (int64_t i = 0; i < frames; ++i) {
      for (int c = 0; c < channels; ++c) planar[c * frames + i] = x[i * channels + c];
    }
    const std::vector<double> weights(static_cast<size_t>(channels), 1.0);
    const std::vector<double> whole = LoudnessBlocks(rate, weights, x, false, {});
    bool same = whole.size() == 2;
    for (int trial = 0; trial < 4; ++trial) {
      std::vector<int64_t> chunks;
      std::uniform_int_distribution<int> pick(0, 6);
      const int64_t sizes[] = {0, 1, 2, 441, 4409, 4410, 4411};
      for (int k = 0; k < 12; ++k) chunks.push_back(sizes[pick(rng)]);
      same &= LoudnessBlocks(rate, weights, x, false, chunks) == whole;
      same &= LoudnessBlocks(rate, weights, planar, true, chunks) == whole;
    }
    same &= LoudnessBlocks(rate, weights, planar, true, {}) == whole;
    Check(same, "loudness: chunked == whole, planar == interleaved, " +
                    std::to_string(channels) + " channels");
  }

  // Non-finite samples count as 0 and are counted; the meter's counts; Reset.
  LoudnessMeter meter(48000.0, {1.0, 0.0});
  std::vector<float> x = Noise(2 * 4800, 5);
  std::vector<float> zeroed = x;
  x[10] = NAN;
  x[3001] = INFINITY;
  x[9000] = -INFINITY;
  zeroed[10] = zeroed[3001] = zeroed[9000] = 0.0f;
  meter.AcceptWaveform(x.data(), 4800);
  double power = 0.0;
  meter.PopBlocks(&power, 1);
  const std::vector<double> want = LoudnessBlocks(48000.0, {1.0, 0.0}, zeroed, false, {});
  Check(meter.NonfiniteSamples() == 3 && std::isfinite(power) && want.size() == 1 &&
            power == want[0] && meter.FramesAccepted() == 4800 && meter.BlocksCompleted() == 1,
        "loudness: non-finite samples count as 0 and are counted");
  meter.Reset();
  Check(meter.NonfiniteSamples() == 0 && meter.FramesAccepted() == 0 &&
            meter.BlocksCompleted() == 0 && meter.BlocksReady() == 0,
        "loudness: Reset starts the counts again");
  Check(LoudnessOfPower(0.0) == kSilenceLufs && LoudnessOfPower(-1.0) == kSilenceLufs &&
            LoudnessOfPower(NAN) == kSilenceLufs && LoudnessOfPower(1e-20) == kSilenceLufs &&
            std::fabs(LoudnessOfPower(1.0) - kLoudnessOffset) < 1e-12,
        "LoudnessOfPower's floor");

  // Errors.
  double out[2];
  meter.AcceptWaveform(x.data(), 4800);
  CheckThrows<std::out_of_range>([&] { meter.PopBlocks(out, 2); }, "pop 2 with 1 ready");
  CheckThrows<std::out_of_range>([&] { meter.PopBlocks(out, -1); }, "pop -1");
  meter.PopBlocks(out, 1);
  CheckThrows<std::out_of_range>([&] { meter.PopBlocks(out, 1); }, "pop 1 with 0 ready");
  CheckThrows<std::invalid_argument>([&] { meter.AcceptWaveform(x.data(), -1); },
                                     "negative frames");
  for (double rate : {0.0, 4000.0, 1e6, -48000.0, static_cast<double>(NAN)}) {
    CheckThrows<std::invalid_argument>([&] { LoudnessMeter(rate, {1.0}); },
                                       "loudness rate " + std::to_string(rate));
    CheckThrows<std::invalid_argument>([&] { KWeighting(rate, &shelf, &high_pass); },
                                       "K-weighting rate " + std::to_string(rate));
  }
  CheckThrows<std::invalid_argument>([&] { LoudnessMeter(48000.0, {}); }, "zero channels");
  CheckThrows<std::invalid_argument>(
      [&] { LoudnessMeter(48000.0, std::vector<double>(65, 1.0)); }, "65 channels");
  CheckThrows<std::invalid_argument>([&] { LoudnessMeter(48000.0, {1.0, -1.0}); },
                                     "weight -1");
  CheckThrows<std::invalid_argument>([&] { LoudnessMeter(48000.0, {NAN}); }, "weight NaN");
  CheckThrows<std::invalid_argument>([&] { LoudnessMeter(48000.0, {10.5}); }, "weight 10.5");
  LoudnessMeter edge(8000.0, std::vector<double>(64, 10.0));
  Check(edge.BlockLength() == 800 && edge.Channels() == 64, "8 kHz, 64 channels of weight 10");
}

}  // namespace

int main() {
  TestLoudnessMeter();
  return Summary("test_loudness_meter");
}
