// libFuzzer target for the EBU R128 loudness meter (csrc/loudness_meter.h), which measures
// audio from stations as it arrives: any sample rate and channel weights the input draws (valid
// or not: invalid ones must throw std::invalid_argument, nothing else), any chunking and any
// samples (raw float32 bits: NaN, infinities, subnormals, values up to 3.4e38). Checked on every
// input, under AddressSanitizer and UndefinedBehaviorSanitizer:
//   - any chunking gives bitwise the block powers of one call on the whole signal, interleaved
//     or planar;
//   - every block power is finite and >= 0, non-finite samples are counted, the block count is
//     frames / block length;
//   - LoudnessOfPower of every block is finite and >= the floor.
// A failed check prints what failed and aborts, so libFuzzer saves the input as a crash.
//
// Build and run: fuzz/run.sh SECONDS loudness_meter
#include <fuzzer/FuzzedDataProvider.h>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <stdexcept>
#include <vector>

#include "fuzz_check.h"
#include "loudness_meter.h"

namespace {

std::vector<double> Pop(streamtag::LoudnessMeter &meter) {
  std::vector<double> out(static_cast<size_t>(meter.BlocksReady()));
  meter.PopBlocks(out.data(), static_cast<int64_t>(out.size()));
  return out;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  FuzzedDataProvider in(data, size);
  const bool wild = in.ConsumeIntegralInRange<int>(0, 7) == 0;
  // Low rates keep blocks short, so that short inputs complete some.
  const double rates[] = {8000, 11025, 16000, 22050, 44100, 48000};
  const double rate = wild ? in.ConsumeFloatingPoint<double>()
                           : rates[in.ConsumeIntegralInRange<int>(0, 5)];
  const int channels = in.ConsumeIntegralInRange<int>(wild ? 0 : 1, wild ? 70 : 6);
  std::vector<double> weights;
  for (int c = 0; c < channels; ++c) {
    weights.push_back(wild ? in.ConsumeFloatingPoint<double>()
                           : in.ConsumeFloatingPointInRange<double>(0.0, 10.0));
  }
  const bool planar = in.ConsumeBool();
  std::vector<int> chunks;  // frames per call
  for (int i = 0; i < 8; ++i) chunks.push_back(in.ConsumeIntegralInRange<int>(0, 3000));
  std::vector<float> samples;
  while (in.remaining_bytes() >= sizeof(float)) {
    float v;
    const std::vector<uint8_t> bytes = in.ConsumeBytes<uint8_t>(sizeof v);
    std::memcpy(&v, bytes.data(), sizeof v);
    samples.push_back(v);
  }
  try {
    streamtag::LoudnessMeter whole(rate, weights);
    CHECK(rate >= 8000 && rate <= 768000 && channels >= 1 && channels <= 64,
          "accepted rate %g with %d channels", rate, channels);
    const int64_t frames = static_cast<int64_t>(samples.size()) / channels;
    // planar: channel c's frames are the c-th run; interleaved: frame t's channels together
    whole.AcceptWaveform(samples.data(), frames, planar);
    const std::vector<double> expected = Pop(whole);
    CHECK(static_cast<int64_t>(expected.size()) == frames / whole.BlockLength(),
          "%zu blocks of %lld frames", expected.size(), static_cast<long long>(frames));
    int64_t nonfinite = 0;
    for (int64_t i = 0; i < frames * channels; ++i) nonfinite += !std::isfinite(samples[i]);
    CHECK(whole.NonfiniteSamples() == nonfinite, "non-finite samples counted");
    for (double power : expected) {
      CHECK(std::isfinite(power) && power >= 0.0, "block power %g", power);
      const double lufs = streamtag::LoudnessOfPower(power);
      CHECK(std::isfinite(lufs) && lufs >= streamtag::kSilenceLufs, "loudness %g", lufs);
    }
    // The same frames in chunks: planar chunks are gathered channel by channel.
    streamtag::LoudnessMeter chunked(rate, weights);
    std::vector<double> got;
    int64_t done = 0;
    for (size_t i = 0; done < frames; ++i) {
      const int64_t n = std::min<int64_t>(frames - done, chunks[i % chunks.size()] + (i >= 64));
      std::vector<float> part(static_cast<size_t>(n * channels));
      for (int64_t t = 0; t < n; ++t) {
        for (int c = 0; c < channels; ++c) {
          const float v = planar ? samples[c * frames + done + t]
                                 : samples[(done + t) * channels + c];
          part[planar ? c * n + t : t * channels + c] = v;
        }
      }
      chunked.AcceptWaveform(part.data(), n, planar);
      const std::vector<double> popped = Pop(chunked);
      got.insert(got.end(), popped.begin(), popped.end());
      done += n;
    }
    CHECK(got.size() == expected.size(), "%zu blocks chunked, %zu whole", got.size(),
          expected.size());
    CHECK(got.empty() ||
              std::memcmp(got.data(), expected.data(), got.size() * sizeof(double)) == 0,
          "chunked blocks differ from whole");
  } catch (const std::invalid_argument &) {
    CHECK(!(rate >= 8000 && rate <= 768000) || channels < 1 || channels > 64 || wild,
          "valid rate %g and %d channels refused", rate, channels);
  }
  return 0;
}
