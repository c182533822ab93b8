// libFuzzer target for the streaming log-mel frontend (csrc/online_log_mel.h) and the frame ring.
//
// The input chooses the options (every field over its valid range and past it: invalid options
// must throw std::invalid_argument, nothing else), the chunking, the pop limits and the samples
// (raw float32 bits: NaN, infinities, subnormals and values up to 3.4e38 included). Checked on
// every input, under AddressSanitizer and UndefinedBehaviorSanitizer:
//   - any chunking and any pop limits give bitwise the frames of ComputeAll on the whole signal;
//   - the frame count is NumFramesFor(n), NaN/Inf samples are counted and act as zeros;
//   - frames are finite whenever the log compression is on, or the signal is at a sane level;
//   - a FrameRing fed the frames returns each window as it was pushed;
//   - with levels kept (turned on at the start or after the first chunk, before any frame),
//     every kept frame's levels equal ComputeAll's bitwise, their counts are whole and not
//     negative, and with hop <= n_fft the blocks of all frames hold every sample once;
//   - with tonal rows kept (n_fft >= 8), one row a frame, bitwise ComputeAll's, finite and not
//     negative, stable peaks no more than peaks, and their window features computed.
// A failed check prints what failed and aborts, so libFuzzer saves the input as a crash.
//
// Build and run: fuzz/run.sh SECONDS
#include <fuzzer/FuzzedDataProvider.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <stdexcept>
#include <string>
#include <vector>

#include "fuzz_check.h"
#include "frame_ring.h"
#include "log_mel_options.h"
#include "online_log_mel.h"
#include "tonal_peaks.h"

namespace {

int64_t LargestPrimeFactor(int64_t n) {
  int64_t largest = 1;
  for (int64_t f = 2; f * f <= n; ++f) {
    while (n % f == 0) {
      largest = f;
      n /= f;
    }
  }
  return n > 1 ? n : largest;
}

// Work of one frame: the real FFT runs a complex FFT of n/2 (n when odd), and a prime radix p
// costs p^2 there (n_fft = 8191 takes about a second a frame): bound frames by it.
int64_t FrameCost(int n_fft) {
  const int64_t half = n_fft % 2 == 0 ? n_fft / 2 : n_fft;
  const int64_t p = LargestPrimeFactor(half);
  return static_cast<int64_t>(n_fft) * (p > 8 ? p : 8);
}

// One input in eight draws "wild" options (any value, valid or not: they must be refused with
// std::invalid_argument); the others draw every field from its valid range, so that most inputs
// reach the frontend even from an empty corpus.
streamtag::LogMelOptions DrawOptions(FuzzedDataProvider &in) {
  const bool wild = in.ConsumeIntegralInRange<int>(0, 7) == 0;
  auto pick = [&](int valid_choices) {  // an index < valid_choices, or == it when wild
    return in.ConsumeIntegralInRange<int>(0, wild ? valid_choices : valid_choices - 1);
  };
  streamtag::LogMelOptions o;
  const double rates[] = {8000, 11025, 12000, 16000, 22050, 44100, 48000, 96000, 192000};
  const int rate = pick(9);
  o.sample_rate = rate < 9 ? rates[rate] : in.ConsumeFloatingPoint<double>();
  o.n_fft = in.ConsumeBool() ? 1 << in.ConsumeIntegralInRange<int>(1, 13)
                             : in.ConsumeIntegralInRange<int>(wild ? -2 : 2, 8192);
  const int n_fft = o.n_fft > 1 ? o.n_fft : 2;
  o.win_length = in.ConsumeBool() ? 0 : in.ConsumeIntegralInRange<int>(wild ? -1 : 1,
                                                                      n_fft + (wild ? 1 : 0));
  o.hop_length = in.ConsumeIntegralInRange<int>(wild ? 0 : 1, n_fft);
  const char *windows[] = {"hann", "hann_symmetric", "hamming"};
  o.window = windows[pick(2)];
  o.center = in.ConsumeBool();
  const char *pads[] = {"constant", "reflect", "edge"};
  o.pad_mode = pads[pick(2)];
  // Up to what a filterbank can hold for this FFT, and past it.
  o.n_mels = in.ConsumeIntegralInRange<int>(wild ? 0 : 1, std::min(300, n_fft / 2 + 2));
  const double nyquist = std::isfinite(o.sample_rate) && o.sample_rate > 0 ? o.sample_rate / 2
                                                                            : 1.0;
  o.fmax = in.ConsumeBool() ? -1.0
                            : (0.05 + 0.95 * in.ConsumeProbability<double>()) * nyquist *
                                  (wild ? 1.1 : 1.0);
  const double top = o.fmax < 0 ? nyquist : o.fmax;
  o.fmin = in.ConsumeBool() ? 0.0 : in.ConsumeProbability<double>() * top * (wild ? 1.1 : 0.9);
  o.mel_scale = in.ConsumeBool() ? "slaney" : "htk";
  o.norm = in.ConsumeBool() ? "slaney" : "none";
  const double powers[] = {2.0, 1.0, 1.5};
  o.power = powers[pick(2)];
  const char *logs[] = {"db", "log1p", "ln", "none", "log2"};
  o.log = logs[pick(4)];
  const double amins[] = {1e-10, 1e-5, 1e-30, 1e-45, 0.0};
  o.amin = amins[pick(4)];
  o.db_multiplier = in.ConsumeBool() ? 10.0 : 20.0;
  o.log1p_gain = in.ConsumeBool() ? 10000.0 : in.ConsumeFloatingPointInRange<double>(1e-3, 1e30);
  return o;
}

bool SameFloat(float a, float b) {
  return std::memcmp(&a, &b, sizeof a) == 0 || (std::isnan(a) && std::isnan(b));
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  FuzzedDataProvider in(data, size);
  const streamtag::LogMelOptions opts = DrawOptions(in);
  bool valid = true;
  try {
    opts.Validate();
  } catch (const std::invalid_argument &) {
    valid = false;
  }
  if (!valid) {
    try {  // the constructor must refuse what Validate refuses, and only with invalid_argument
      streamtag::OnlineLogMel refused(opts);
      CHECK(false, "OnlineLogMel accepted options Validate refuses: %s", opts.ToString().c_str());
    } catch (const std::invalid_argument &) {
    }
    return 0;
  }
  // Sizes whose FFT has a large prime radix cost O(n^2) a frame (a known cliff: n_fft = 8191
  // takes a second a frame), and as much again to build the plan: their code path is covered by
  // the smaller primes, so skip them before constructing anything.
  constexpr int64_t kBudget = 2000000;  // FrameCost units per input
  if (FrameCost(opts.n_fft) > kBudget) return 0;
  std::vector<streamtag::OnlineLogMel> fe;
  try {
    fe.emplace_back(opts);
  } catch (const std::invalid_argument &e) {
    // Valid options whose filterbank cannot be built (too many mels for the FFT): the message
    // must say which option to change.
    const std::string what = e.what();
    CHECK(what.find("n_mels") != std::string::npos || what.find("fmin") != std::string::npos,
          "unhelpful error: %s", e.what());
    return 0;
  }
  const int n_mels = opts.n_mels;

  // The chunking and the pop limits, then the samples from the rest of the input.
  std::vector<int> chunks(in.ConsumeIntegralInRange<int>(0, 16));
  for (int &c : chunks) c = in.ConsumeIntegralInRange<int>(0, 3 * opts.n_fft);
  std::vector<int> pop_limits(in.ConsumeIntegralInRange<int>(0, 4));
  for (int &p : pop_limits) p = in.ConsumeIntegralInRange<int>(-1, 8);
  const float scale = in.ConsumeBool() ? 1.0f : in.ConsumeFloatingPoint<float>();
  const int64_t keep = in.ConsumeBool() ? 0 : in.ConsumeIntegralInRange<int64_t>(1, 5000);
  const bool keep_late = in.ConsumeBool();  // after the first chunk, when no frame is computed
  if (keep > 0 && !keep_late) fe[0].KeepLevels(keep);
  const bool tonal = opts.n_fft >= 8 && in.ConsumeBool();
  if (tonal) fe[0].KeepTonal(true);
  const std::vector<uint8_t> bytes = in.ConsumeRemainingBytes<uint8_t>();
  std::vector<float> x(bytes.size() / sizeof(float));
  if (!x.empty()) std::memcpy(x.data(), bytes.data(), x.size() * sizeof(float));
  const int64_t max_frames = std::max<int64_t>(1, kBudget / FrameCost(opts.n_fft));
  const int64_t max_samples = max_frames * opts.hop_length + opts.n_fft;
  if (static_cast<int64_t>(x.size()) > max_samples) x.resize(max_samples);
  int64_t nonfinite = 0;
  float peak = 0.0f;
  for (float &v : x) {
    v *= scale;
    if (!std::isfinite(v)) {
      ++nonfinite;
    } else if (std::fabs(v) > peak) {
      peak = std::fabs(v);
    }
  }
  const int64_t n = static_cast<int64_t>(x.size());

  // Streaming: chunks of the drawn sizes (the rest in one), pops of the drawn limits.
  std::vector<float> streamed, tonal_streamed;
  auto pop = [&](int64_t limit) {
    std::vector<float> out(static_cast<size_t>(fe[0].FramesPending()) * n_mels + 1);
    const int64_t got = fe[0].Pop(out.data(), limit);
    CHECK(got >= 0 && (limit < 0 || got <= limit), "pop returned %lld", (long long)got);
    streamed.insert(streamed.end(), out.begin(), out.begin() + got * n_mels);
    if (!tonal) return;
    std::vector<float> rows(static_cast<size_t>(fe[0].TonalPending()) * streamtag::kTonalRowSize
                            + 1);
    const int64_t got_rows = fe[0].PopTonal(rows.data(), limit);
    CHECK(got_rows >= 0 && (limit < 0 || got_rows <= limit), "pop_tonal returned %lld",
          (long long)got_rows);
    tonal_streamed.insert(tonal_streamed.end(), rows.begin(),
                          rows.begin() + got_rows * streamtag::kTonalRowSize);
  };
  int64_t at = 0;
  size_t next_limit = 0;
  bool kept = keep > 0 && !keep_late;
  for (int c : chunks) {
    const int64_t take = std::min<int64_t>(c, n - at);
    fe[0].AcceptWaveform(x.data() + at, take);
    at += take;
    if (keep > 0 && !kept && fe[0].FramesReady() == 0) {
      fe[0].KeepLevels(keep);
      kept = true;
    }
    pop(pop_limits.empty() ? -1 : pop_limits[next_limit++ % pop_limits.size()]);
  }
  fe[0].AcceptWaveform(x.data() + at, n - at);
  fe[0].InputFinished();
  while (fe[0].FramesPending() > 0) pop(-1);
  CHECK(fe[0].NonfiniteSamples() == nonfinite, "nonfinite %lld, expected %lld",
        (long long)fe[0].NonfiniteSamples(), (long long)nonfinite);
  try {
    fe[0].AcceptWaveform(x.data(), 1);
    CHECK(false, "audio after InputFinished was accepted");
  } catch (const std::runtime_error &) {
  }

  // The whole signal at once.
  const int64_t frames = fe[0].NumFramesFor(n);
  CHECK(static_cast<int64_t>(streamed.size()) == frames * n_mels, "%zu values for %lld frames",
        streamed.size(), (long long)frames);
  std::vector<float> whole(static_cast<size_t>(frames) * n_mels + 1);
  streamtag::OnlineLogMel batch(opts);
  CHECK(batch.ComputeAll(x.data(), n, whole.data()) == frames, "ComputeAll frame count");
  for (int64_t i = 0; i < frames * n_mels; ++i) {
    CHECK(SameFloat(streamed[i], whole[i]), "frame %lld mel %lld: streamed %a, whole %a (%s)",
          (long long)(i / n_mels), (long long)(i % n_mels), streamed[i], whole[i],
          opts.ToString().c_str());
  }
  // NaN/Inf samples act as zeros.
  if (nonfinite > 0) {
    std::vector<float> zeroed(x);
    for (float &v : zeroed) v = std::isfinite(v) ? v : 0.0f;
    std::vector<float> clean(whole.size());
    batch.ComputeAll(zeroed.data(), n, clean.data());
    for (int64_t i = 0; i < frames * n_mels; ++i) {
      CHECK(SameFloat(clean[i], whole[i]), "non-finite samples are not zeros at %lld",
            (long long)i);
    }
  }
  if (opts.log != "none" || peak <= 1e4f) {
    for (int64_t i = 0; i < frames * n_mels; ++i) {
      CHECK(std::isfinite(whole[i]), "frame %lld mel %lld is %a (peak %g, %s)",
            (long long)(i / n_mels), (long long)(i % n_mels), whole[i], peak,
            opts.ToString().c_str());
    }
  }

  // Levels: streamed against the whole signal's, bitwise.
  if (kept && frames > 0) {
    const int64_t length = std::min(keep, frames);
    const int64_t rows = fe[0].LevelRowCount(frames, length);  // one a level step
    std::vector<float> got(static_cast<size_t>(rows) * streamtag::kFrameLevelSize);
    std::vector<float> want(got.size());
    fe[0].FrameLevels(frames, length, got.data());
    streamtag::OnlineLogMel levels(opts);
    levels.KeepLevels(keep);
    std::vector<float> unused(whole.size());
    levels.ComputeAll(x.data(), n, unused.data());
    levels.FrameLevels(frames, length, want.data());
    for (size_t i = 0; i < got.size(); ++i) {
      CHECK(SameFloat(got[i], want[i]),
            "level %zu of row %lld of the last %lld: streamed %a, whole %a (%s)",
            i % streamtag::kFrameLevelSize, (long long)(i / streamtag::kFrameLevelSize),
            (long long)rows, got[i], want[i],
            opts.ToString().c_str());
    }
    double samples = 0;
    for (int64_t t = 0; t < rows; ++t) {
      const float *f = got.data() + t * streamtag::kFrameLevelSize;
      CHECK(f[streamtag::kClipped] >= 0 && f[streamtag::kRealSamples] >= 0 &&
                f[streamtag::kClipped] <= f[streamtag::kRealSamples] &&
                f[streamtag::kRealSamples] == std::floor(f[streamtag::kRealSamples]),
            "row %lld of the last %lld: clipped %g of %g samples", (long long)t, (long long)rows,
            f[streamtag::kClipped], f[streamtag::kRealSamples]);
      samples += f[streamtag::kRealSamples];
    }
    if (length == frames && opts.hop_length <= opts.n_fft) {
      CHECK(samples == static_cast<double>(n), "the blocks hold %g samples of %lld", samples,
            (long long)n);
    }
  }

  // Tonal rows: one a frame, streamed as the whole signal's, bitwise; sane values.
  if (tonal) {
    CHECK(static_cast<int64_t>(tonal_streamed.size()) == frames * streamtag::kTonalRowSize,
          "%zu tonal values for %lld frames", tonal_streamed.size(), (long long)frames);
    streamtag::OnlineLogMel rows_whole(opts);
    rows_whole.KeepTonal(true);
    std::vector<float> unused(whole.size());
    rows_whole.ComputeAll(x.data(), n, unused.data());
    std::vector<float> want(static_cast<size_t>(frames) * streamtag::kTonalRowSize + 1);
    CHECK(rows_whole.PopTonal(want.data(), -1) == frames, "ComputeAll tonal row count");
    for (int64_t i = 0; i < frames * streamtag::kTonalRowSize; ++i) {
      CHECK(SameFloat(tonal_streamed[i], want[i]), "tonal row %lld value %lld: streamed %a, "
            "whole %a (%s)", (long long)(i / streamtag::kTonalRowSize),
            (long long)(i % streamtag::kTonalRowSize), tonal_streamed[i], want[i],
            opts.ToString().c_str());
    }
    for (int64_t t = 0; t < frames; ++t) {
      const float *r = tonal_streamed.data() + t * streamtag::kTonalRowSize;
      for (int k = 0; k < streamtag::kTonalRowSize; ++k) {
        CHECK(std::isfinite(r[k]) && r[k] >= 0, "tonal row %lld value %d is %a", (long long)t,
              k, r[k]);
      }
      CHECK(r[streamtag::kStablePeaks] <= r[streamtag::kPeaks], "tonal row %lld: %g stable of "
            "%g peaks", (long long)t, r[streamtag::kStablePeaks], r[streamtag::kPeaks]);
    }
    if (frames > 0) {
      double features[streamtag::kTonalFeatureCount];
      streamtag::TonalWindowFeatures(tonal_streamed.data(), frames, features);
      for (double f : features) CHECK(std::isfinite(f) && f >= 0, "tonal feature %g", f);
    }
  }

  // The frame ring: windows read back as pushed, by absolute index, after overwrites too.
  if (frames > 0) {
    const int64_t capacity = 1 + frames % 37;
    streamtag::FrameRing ring(capacity, n_mels, 5);
    ring.Push(whole.data(), frames);
    const int64_t length = std::min<int64_t>(capacity, frames);
    std::vector<float> window(static_cast<size_t>(length) * n_mels);
    ring.Window(ring.EndIndex(), length, false, window.data());
    CHECK(std::memcmp(window.data(), whole.data() + (frames - length) * n_mels,
                      window.size() * sizeof(float)) == 0, "ring window differs");
    CHECK(ring.FramesOverwritten() == frames - length, "overwritten count");
    try {
      ring.Window(ring.EndIndex(), length + 1, true, window.data());
      CHECK(false, "a window longer than what is held was returned");
    } catch (const std::out_of_range &) {
    }
  }
  return 0;
}
