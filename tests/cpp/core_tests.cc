// A small test driver for the C++ core, built with AddressSanitizer + UndefinedBehaviorSanitizer
// in CI (cmake -DSTREAMTAG_CORE_TESTS=ON -DSTREAMTAG_SANITIZE=ON). It exercises every path the
// Python tests do, so the sanitizers see the real workload: FFT sizes of every radix, chunkings
// that split frames everywhere, padding at both ends of short signals, the four-frame path,
// the frame ring's wrap-around and the error paths.
#include <algorithm>
#include <cmath>
#include <complex>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#include "fft.h"
#include "frame_ring.h"
#include "json_numbers.h"
#include "log_mel_options.h"
#include "loudness_meter.h"
#include "mel_filterbank.h"
#include "online_log_mel.h"
#include "window_level.h"

using namespace streamtag;

namespace {

int passed = 0, failed = 0;

void Check(bool ok, const std::string &what) {
  if (ok) {
    ++passed;
  } else {
    ++failed;
    std::printf("FAILED: %s\n", what.c_str());
  }
}

template <typename E>
void CheckThrows(const std::function<void()> &fn, const std::string &what) {
  try {
    fn();
  } catch (const E &) {
    ++passed;
    return;
  } catch (...) {
  }
  ++failed;
  std::printf("FAILED (no or wrong exception): %s\n", what.c_str());
}

std::vector<float> Noise(size_t n, unsigned seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> dist(0.0f, 0.3f);
  std::vector<float> x(n);
  for (float &v : x) v = dist(rng);
  return x;
}

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

std::vector<float> Frames(const LogMelOptions &o, const std::vector<float> &x,
                          const std::vector<int64_t> &chunks) {
  OnlineLogMel fe(o);
  size_t i = 0;
  for (int64_t c : chunks) {
    const int64_t n = std::min<int64_t>(c, static_cast<int64_t>(x.size() - i));
    fe.AcceptWaveform(x.data() + i, n);
    i += n;
  }
  fe.AcceptWaveform(x.data() + i, static_cast<int64_t>(x.size() - i));
  fe.InputFinished();
  std::vector<float> out(static_cast<size_t>(fe.FramesPending()) * o.n_mels);
  fe.Pop(out.data(), -1);
  if (fe.FramesReady() != fe.NumFramesFor(static_cast<int64_t>(x.size()))) out.push_back(NAN);
  return out;
}

void TestChunkInvariance() {
  std::vector<LogMelOptions> variants;
  for (const auto &name : LogMelOptions::PresetNames()) variants.push_back(LogMelOptions::Preset(name));
  LogMelOptions o;
  o.center = false;
  o.hop_length = 200;
  o.n_mels = 40;
  variants.push_back(o);
  o = LogMelOptions();
  o.n_fft = 401;
  o.win_length = 300;
  o.hop_length = 97;
  o.n_mels = 32;
  o.pad_mode = "reflect";
  o.mel_scale = "htk";
  o.norm = "none";
  variants.push_back(o);
  o = LogMelOptions();
  o.n_fft = 400;
  o.hop_length = 160;
  o.n_mels = 64;
  o.power = 1;
  o.log = "ln";
  variants.push_back(o);
  o = LogMelOptions();
  o.log = "none";
  o.n_mels = 30;
  variants.push_back(o);

  std::mt19937 rng(7);
  for (size_t v = 0; v < variants.size(); ++v) {
    const LogMelOptions &opts = variants[v];
    for (size_t length : {0, 1, 2, 5, 100, 257, 513, 3000, 20000}) {
      const std::vector<float> x = Noise(length, static_cast<unsigned>(length + v));
      const std::vector<float> whole = Frames(opts, x, {});
      bool same = true;
      for (int trial = 0; trial < 6; ++trial) {
        std::vector<int64_t> chunks;
        std::uniform_int_distribution<int> pick(0, 6);
        const int64_t sizes[] = {0, 1, 3, 255, 256, 1024, 4097};
        for (int k = 0; k < 60; ++k) chunks.push_back(sizes[pick(rng)]);
        const std::vector<float> got = Frames(opts, x, chunks);
        same &= got.size() == whole.size();
        for (size_t i = 0; same && i < got.size(); ++i) {
          same &= got[i] == whole[i] || (std::isnan(got[i]) && std::isnan(whole[i]));
        }
      }
      bool finite = true;
      for (float f : whole) finite &= std::isfinite(f);
      Check(same && finite, "chunk invariance, variant " + std::to_string(v) + ", length " +
                                std::to_string(length));
    }
  }
}

void TestNonFiniteInput() {
  LogMelOptions o;
  std::vector<float> x = Noise(8000, 3), clean = x;
  for (int i = 100; i < 140; ++i) x[i] = NAN, clean[i] = 0;
  x[5000] = INFINITY, clean[5000] = 0;
  OnlineLogMel fe(o);
  fe.AcceptWaveform(x.data(), static_cast<int64_t>(x.size()));
  fe.InputFinished();
  std::vector<float> out(static_cast<size_t>(fe.FramesPending()) * o.n_mels);
  fe.Pop(out.data(), -1);
  Check(fe.NonfiniteSamples() == 41, "non-finite samples counted");
  Check(out == Frames(o, clean, {}), "non-finite samples become zeros");
  // One non-finite sample anywhere in a chunk of any length is found (the check goes eight
  // samples at a time, then one by one), and huge finite ones are not taken for it.
  bool found = true;
  for (int n = 1; n <= 19; ++n) {
    for (int at = 0; at < n; ++at) {
      for (float bad : {NAN, INFINITY, -INFINITY}) {
        std::vector<float> chunk(static_cast<size_t>(n), 3e38f);
        chunk[static_cast<size_t>(at)] = bad;
        OnlineLogMel one(o);
        one.AcceptWaveform(chunk.data(), n);
        one.AcceptWaveform(chunk.data(), n);
        found &= one.NonfiniteSamples() == 2;
      }
    }
    std::vector<float> loud(static_cast<size_t>(n), -3e38f);
    OnlineLogMel none(o);
    none.AcceptWaveform(loud.data(), n);
    found &= none.NonfiniteSamples() == 0;
  }
  Check(found, "a lone non-finite sample found at every place in a chunk");
}

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
  CheckThrows<std::invalid_argument>([] {
    LogMelOptions o;
    o.hop_length = 0;
    OnlineLogMel fe(o);
  }, "hop_length zero");
  CheckThrows<std::invalid_argument>([] {
    LogMelOptions o;
    o.n_fft = 128;
    o.n_mels = 128;
    MelFilterbank bank(o);
  }, "empty mel filter");
  CheckThrows<std::runtime_error>([] {
    OnlineLogMel fe{LogMelOptions()};
    fe.InputFinished();
    float x = 0;
    fe.AcceptWaveform(&x, 1);
  }, "audio after input_finished");
  CheckThrows<std::invalid_argument>([] { LogMelOptions::Preset("nope"); }, "unknown preset");
}

void TestFrameRing() {
  FrameRing ring(5, 2, int64_t{1} << 40);
  std::vector<float> frames(2 * 12);
  for (size_t i = 0; i < frames.size(); ++i) frames[i] = static_cast<float>(i);
  ring.Push(frames.data(), 3);
  ring.Push(frames.data() + 6, 9);
  const int64_t base = int64_t{1} << 40;
  Check(ring.EndIndex() == base + 12 && ring.BeginIndex() == base + 7, "ring indices");
  Check(ring.FramesOverwritten() == 7, "ring overwrites counted");
  std::vector<float> w(2 * 5), wt(2 * 5);
  ring.Window(base + 12, 5, false, w.data());
  ring.Window(base + 12, 5, true, wt.data());
  bool ok = true;
  for (int i = 0; i < 5; ++i) {
    for (int m = 0; m < 2; ++m) {
      ok &= w[i * 2 + m] == frames[(7 + i) * 2 + m] && wt[m * 5 + i] == frames[(7 + i) * 2 + m];
    }
  }
  Check(ok, "ring window contents");
  CheckThrows<std::out_of_range>([&] { ring.Window(base + 12, 6, false, w.data()); },
                                 "window older than the ring");
  CheckThrows<std::out_of_range>([&] { ring.Window(base + 13, 1, false, w.data()); },
                                 "window newer than the ring");
  ring.Push(frames.data(), 12);  // more than the capacity at once
  Check(ring.FramesOverwritten() == 19 && ring.Size() == 5, "bulk push overwrites counted");
}

void TestJsonNumbers() {
  // Python's repr of each value (the Python tests compare millions against json.dumps)
  const std::pair<double, const char *> cases[] = {
      {0.0, "0.0"},        {-0.0, "-0.0"},   {1.0, "1.0"},       {0.25, "0.25"},
      {1e-05, "1e-05"},    {1.2e-05, "1.2e-05"}, {0.0001, "0.0001"}, {123.5, "123.5"},
      {1e15, "1000000000000000.0"}, {1e16, "1e+16"}, {-1.5e16, "-1.5e+16"},
      {1e300, "1e+300"},   {5e-324, "5e-324"}, {0.1, "0.1"},     {2.0 / 3.0, "0.6666666666666666"}};
  for (const auto &[x, want] : cases) {
    std::string got;
    AppendFloatRepr(x, got);
    Check(got == want, "repr of " + std::string(want) + ": got " + got);
  }
  const double scores[] = {0.1234565, 2.5e-7, 0.5, 1e303};
  std::string out;
  Check(RoundedJsonArray(scores, 3, 6, out) && out == "[0.123456,0.0,0.5]",
        "rounded array: got " + out);
  Check(!RoundedJsonArray(scores, 4, 6, out), "a value that overflows when rounded");
  CheckThrows<std::invalid_argument>([&] { RoundedJsonArray(scores, 1, 16, out); },
                                     "16 decimals");
}

// Frames and per-step levels of x fed in the given chunks (the rest in one), levels kept for
// every frame.
struct Fed {
  std::vector<float> frames, levels;
};

Fed FeedWithLevels(const LogMelOptions &o, const std::vector<float> &x,
                   const std::vector<int64_t> &chunks, int64_t keep = 1 << 16) {
  OnlineLogMel fe(o);
  fe.KeepLevels(keep);
  size_t i = 0;
  for (int64_t c : chunks) {
    const int64_t n = std::min<int64_t>(c, static_cast<int64_t>(x.size() - i));
    fe.AcceptWaveform(x.data() + i, n);
    i += n;
  }
  fe.AcceptWaveform(x.data() + i, static_cast<int64_t>(x.size() - i));
  fe.InputFinished();
  Fed out;
  out.frames.resize(static_cast<size_t>(fe.FramesPending()) * o.n_mels);
  fe.Pop(out.frames.data(), -1);
  const int64_t t = fe.FramesReady();
  if (t > 0) {
    out.levels.resize(static_cast<size_t>(fe.LevelRowCount(t, t)) * kFrameLevelSize);
    fe.FrameLevels(t, t, out.levels.data());
  }
  return out;
}

bool BitwiseEqual(const std::vector<float> &a, const std::vector<float> &b) {
  return a.size() == b.size() && (a.empty() || std::memcmp(a.data(), b.data(), a.size() * 4) == 0);
}

std::vector<LogMelOptions> LevelVariants() {
  std::vector<LogMelOptions> variants;
  for (const auto &name : LogMelOptions::PresetNames()) variants.push_back(LogMelOptions::Preset(name));
  LogMelOptions o = LogMelOptions::Preset("musicnn");  // the default model's frontend
  o.n_fft = 2048;
  o.hop_length = 512;
  o.n_mels = 192;
  variants.push_back(o);
  o = LogMelOptions();
  o.center = false;
  o.hop_length = 200;
  o.n_mels = 40;
  variants.push_back(o);
  o = LogMelOptions();
  o.n_fft = 401;
  o.win_length = 300;
  o.hop_length = 97;
  o.n_mels = 32;
  o.pad_mode = "reflect";
  o.power = 1;
  o.log = "ln";
  variants.push_back(o);
  o = LogMelOptions();  // hop > n_fft: blocks clipped to their frames
  o.n_fft = 256;
  o.hop_length = 300;
  o.n_mels = 20;
  variants.push_back(o);
  return variants;
}

// Any chunking, 1-sample chunks included, gives bitwise the whole signal's per-step levels; the
// frames are bitwise those computed without levels; the blocks partition the signal.
void TestLevelChunkInvariance() {
  std::mt19937 rng(11);
  const std::vector<LogMelOptions> variants = LevelVariants();
  for (size_t v = 0; v < variants.size(); ++v) {
    const LogMelOptions &o = variants[v];
    for (size_t length : {1, 2, 100, 513, 3001, 20000}) {
      std::vector<float> x = Noise(length, static_cast<unsigned>(3 * length + v));
      for (size_t i = 0; i < x.size(); i += 37) x[i] = i % 2 ? 1.0f : -1.5f;  // clipped samples
      const Fed whole = FeedWithLevels(o, x, {});
      bool same = BitwiseEqual(whole.frames, Frames(o, x, {}));
      for (int trial = 0; trial < 5; ++trial) {
        std::vector<int64_t> chunks;
        if (trial == 0) {
          chunks.assign(x.size(), 1);
        } else {
          const int64_t sizes[] = {0, 1, 2, 7, 255, 256, 1023, 4097};
          std::uniform_int_distribution<int> pick(0, 7);
          for (int k = 0; k < 80; ++k) chunks.push_back(sizes[pick(rng)]);
        }
        const Fed got = FeedWithLevels(o, x, chunks);
        same &= BitwiseEqual(got.levels, whole.levels) && BitwiseEqual(got.frames, whole.frames);
      }
      Check(same, "level chunk invariance, variant " + std::to_string(v) + ", length " +
                      std::to_string(length));

      // Each step's numbers against its block taken from the definition, in double: k frames a
      // step, as many as fit in 32 ms (one when hop > n_fft), the last step ending with the
      // last frame.
      const int64_t frame_count = static_cast<int64_t>(whole.frames.size()) / o.n_mels;
      const int64_t frames = static_cast<int64_t>(whole.levels.size()) / kFrameLevelSize;
      const int64_t k = o.hop_length > o.n_fft
                            ? 1
                            : std::max<int64_t>(1, static_cast<int64_t>(std::floor(
                                                       0.032 * o.sample_rate / o.hop_length + 1e-9)));
      Check(frames == (frame_count + k - 1) / k,
            "one row a step of " + std::to_string(k) + " frames, variant " + std::to_string(v));
      const int64_t hop = o.hop_length * k, lead = o.center ? o.hop_length / 2 : 0;
      const int64_t pad = o.center ? o.n_fft / 2 : 0, n = static_cast<int64_t>(x.size());
      std::vector<int> owners(x.size(), 0);
      bool exact = true;
      for (int64_t t = 0; t < frames; ++t) {
        int64_t begin = std::max<int64_t>(t * hop - lead, 0);
        int64_t end = std::min<int64_t>(t * hop - lead + hop, n);
        if (o.hop_length > o.n_fft) {  // clipped to the frame's samples
          begin = std::max<int64_t>(begin, t * hop - pad);
          end = std::min<int64_t>(end, t * hop - pad + o.n_fft);
        }
        if (t == frames - 1 && o.hop_length <= o.n_fft) end = n;  // the tail: the last step's
        double sum = 0;
        float peak = 0;
        int clipped = 0;
        for (int64_t i = begin; i < end; ++i) {
          sum += double(x[i]) * x[i];
          peak = std::max(peak, std::fabs(x[i]));
          clipped += std::fabs(x[i]) >= kClipLevel;
          owners[i] += 1;
        }
        const float *f = whole.levels.data() + t * kFrameLevelSize;
        exact &= std::fabs(f[kSumSquares] - sum) <= 1e-5 * sum + 1e-30;
        exact &= f[kPeak] == peak && f[kClipped] == clipped &&
                 f[kRealSamples] == std::max<int64_t>(0, end - begin);
        exact &= f[kOnsetFlux] >= 0 && (t > 0 || f[kOnsetFlux] == 0);
      }
      bool partition = true;
      for (size_t i = 0; i < owners.size(); ++i) {
        partition &= owners[i] <= 1 && (owners[i] == 1 || frames == 0 || o.hop_length > o.n_fft);
      }
      Check(exact && partition, "levels against their blocks, variant " + std::to_string(v) +
                                    ", length " + std::to_string(length));
    }
  }
}

WindowLevel LevelOf(const LogMelOptions &o, const std::vector<float> &x, int64_t end,
                    int64_t length) {
  OnlineLogMel fe(o);
  fe.KeepLevels(1000);
  fe.AcceptWaveform(x.data(), static_cast<int64_t>(x.size()));
  fe.InputFinished();
  return fe.WindowLevel(end, length);
}

void TestSineAndSilenceLevels() {
  const LogMelOptions o = LogMelOptions::Preset("musicnn");
  std::vector<float> sine(48000), square(48000), silence(48000, 0.0f);
  for (size_t i = 0; i < sine.size(); ++i) {
    sine[i] = static_cast<float>(0.5 * std::sin(2 * M_PI * 1000.0 * i / 16000.0));
    square[i] = (i / 8) % 2 ? 1.0f : -1.0f;
  }
  const WindowLevel s = LevelOf(o, sine, 150, 100);
  Check(std::fabs(s.rms_dbfs + 9.031) < 0.01 && std::fabs(s.peak_dbfs + 6.021) < 0.01 &&
            s.clipped == 0 && s.samples == 100 * 256 && s.onsets == 0,
        "sine levels: " + s.ToString());
  const WindowLevel q = LevelOf(o, square, 150, 100);
  Check(std::fabs(q.rms_dbfs) < 1e-6 && q.peak_dbfs == 0 && q.clipped == 100 * 256,
        "full-scale square: " + q.ToString());
  const WindowLevel z = LevelOf(o, silence, 150, 100);
  Check(z.rms_dbfs == kSilenceDbfs && z.peak_dbfs == kSilenceDbfs && z.onsets == 0 &&
            z.onset_rate_hz == 0 && z.clipped == 0,
        "silence: " + z.ToString());
}

void TestWindowLevelOf() {
  // Ten frames of 512 samples at 16 kHz: one clear onset at frame 4, a smaller one at 8.
  std::vector<float> f(10 * kFrameLevelSize, 0.0f);
  const float flux[10] = {0, 0.5f, 0.4f, 0.6f, 12, 3, 0.5f, 0.4f, 8, 0.5f};
  for (int t = 0; t < 10; ++t) {
    f[t * kFrameLevelSize + kSumSquares] = 8.0f * (t + 1);
    f[t * kFrameLevelSize + kPeak] = 0.1f * t;
    f[t * kFrameLevelSize + kClipped] = t == 9 ? 3.0f : 0.0f;
    f[t * kFrameLevelSize + kRealSamples] = 512;
    f[t * kFrameLevelSize + kOnsetFlux] = flux[t];
  }
  const WindowLevel w = WindowLevelOf(f.data(), 10, 512, 16000.0);
  const double want_rms = 10 * std::log10(8.0 * 55 / 5120);
  Check(std::fabs(w.rms_dbfs - want_rms) < 1e-9 &&
            std::fabs(w.peak_dbfs - 20 * std::log10(0.9f)) < 1e-6 && w.clipped == 3 &&
            w.samples == 5120 && w.onsets == 2 && std::fabs(w.onset_rate_hz - 2 / 0.32) < 1e-9,
        "aggregation of a hand-made window: " + w.ToString());
  // Ties go to the earlier frame; a flat window (everything below 1 dB) has none.
  f[5 * kFrameLevelSize + kOnsetFlux] = 12;
  Check(WindowLevelOf(f.data(), 10, 512, 16000.0).onsets == 2, "a tie is one onset");
  for (int t = 0; t < 10; ++t) f[t * kFrameLevelSize + kOnsetFlux] = 0.1f * (t % 3);
  Check(WindowLevelOf(f.data(), 10, 512, 16000.0).onsets == 0, "flux below 1 dB: no onsets");
  // Steady flux: local maxima within 3x the median are not onsets.
  for (int t = 0; t < 10; ++t) f[t * kFrameLevelSize + kOnsetFlux] = 2.0f + (t % 3);
  Check(WindowLevelOf(f.data(), 10, 512, 16000.0).onsets == 0, "steady flux: no onsets");
  std::vector<float> zero(kFrameLevelSize, 0.0f);
  const WindowLevel z = WindowLevelOf(zero.data(), 1, 512, 16000.0);
  Check(z.rms_dbfs == kSilenceDbfs && z.peak_dbfs == kSilenceDbfs && z.samples == 0,
        "a frame owning no samples");
  CheckThrows<std::invalid_argument>([&] { WindowLevelOf(f.data(), 0, 512, 16000.0); },
                                     "empty window");
  CheckThrows<std::invalid_argument>([&] { WindowLevelOf(f.data(), 1, 0, 16000.0); },
                                     "hop 0");
  CheckFrameLevels(f.data(), 10);
  f[kRealSamples] = -1;
  CheckThrows<std::invalid_argument>([&] { CheckFrameLevels(f.data(), 10); },
                                     "negative sample count");
  f[kRealSamples] = 2.5f;
  CheckThrows<std::invalid_argument>([&] { CheckFrameLevels(f.data(), 10); },
                                     "fractional sample count");
  f[kRealSamples] = 512;
  f[3 * kFrameLevelSize + kOnsetFlux] = NAN;
  CheckThrows<std::invalid_argument>([&] { CheckFrameLevels(f.data(), 10); }, "NaN flux");
}

// The AVX2 kernels (where the CPU has them) give bitwise the portable SSE/NEON kernels' numbers,
// at every length and alignment; the peak is exactly max |x|.
void TestLevelKernels() {
  std::vector<float> x = Noise(5000, 21), y = Noise(5000, 22);
  x[77] = 1.0f, x[300] = -0.9995f, x[301] = 3e-20f;
  bool same = true, exact = true;
  for (int64_t n = 0; n <= 600; n += (n < 70 ? 1 : 37)) {
    for (int64_t offset : {0, 1, 3, 31, 77}) {
      float wide[kFrameLevelSize], portable[kFrameLevelSize];
      MeasureBlock(x.data() + offset, n, wide);
      MeasureBlockPortable(x.data() + offset, n, portable);
      same &= std::memcmp(wide, portable, 4 * sizeof(float)) == 0;
      float peak = 0;
      int clipped = 0;
      for (int64_t i = offset; i < offset + n; ++i) {
        peak = std::max(peak, std::fabs(x[i]));
        clipped += std::fabs(x[i]) >= kClipLevel;
      }
      exact &= wide[kPeak] == peak && wide[kClipped] == clipped && wide[kRealSamples] == n;
      if (n > 0) {
        const int bands = static_cast<int>(n);
        const float a = MeanRise(x.data() + offset, y.data(), bands);
        const float b = MeanRisePortable(x.data() + offset, y.data(), bands);
        same &= std::memcmp(&a, &b, sizeof a) == 0;
        // One frame's features at once: the block's and the rise, as the two calls give them.
        const int mels = 1 + static_cast<int>((n * 7 + offset) % 200);
        const float scale = 4.342945f;
        float apart[kFrameLevelSize], together[kFrameLevelSize], slow[kFrameLevelSize];
        std::memcpy(apart, wide, sizeof wide);
        apart[kOnsetFlux] = MeanRise(y.data() + offset, x.data() + 9, mels) * scale;
        MeasureFrameLevel(x.data() + offset, n, y.data() + offset, x.data() + 9, mels, scale,
                          together);
        MeasureFrameLevelPortable(x.data() + offset, n, y.data() + offset, x.data() + 9, mels,
                                  scale, slow);
        same &= std::memcmp(apart, together, sizeof apart) == 0;
        same &= std::memcmp(apart, slow, sizeof apart) == 0;
        MeasureFrameLevel(x.data() + offset, n, y.data(), nullptr, mels, scale, together);
        same &= together[kOnsetFlux] == 0.0f &&
                std::memcmp(wide, together, 4 * sizeof(float)) == 0;
      }
    }
  }
  Check(same, "wide level kernels equal the portable ones bitwise");
  Check(exact, "block peak and clipped count exact");

  // Rows of rises at a stride (level steps of several frames), every unrolled round count and
  // the rest: bitwise MeanRise of each row against the row before it.
  bool rows_same = true;
  for (int bands : {1, 31, 32, 33, 64, 95, 96, 97, 128, 160, 192, 224, 255, 256, 257, 300}) {
    for (int64_t stride : {int64_t{bands}, int64_t{2} * bands + 3}) {
      const int64_t count = 7;
      std::vector<float> rows = Noise(static_cast<size_t>(stride * count + bands), 40 + bands);
      const std::vector<float> before = Noise(static_cast<size_t>(bands), 41);
      std::vector<float> got(count);
      MeanRiseRows(rows.data(), before.data(), bands, stride, count, got.data());
      for (int64_t r = 0; r < count; ++r) {
        const float *previous = r == 0 ? before.data() : rows.data() + (r - 1) * stride;
        const float want = MeanRisePortable(rows.data() + r * stride, previous, bands);
        rows_same &= std::memcmp(&want, &got[static_cast<size_t>(r)], sizeof want) == 0;
      }
    }
  }
  Check(rows_same, "MeanRiseRows at a stride equals MeanRise row by row, bitwise");
}

// A window's aggregation over rows in two runs (a ring's wrap) equals the same rows in one run
// and a plain reference: sums in row order, the rule of the header for the onsets.
void TestWindowLevelRuns() {
  std::mt19937 rng(17);
  bool same = true, right = true;
  int compared = 0;
  for (int trial = 0; trial < 200; ++trial) {
    const int64_t n = std::uniform_int_distribution<int64_t>(1, 700)(rng);
    std::vector<float> f(static_cast<size_t>(n) * kFrameLevelSize);
    std::uniform_real_distribution<float> unit(0.0f, 1.0f);
    for (int64_t t = 0; t < n; ++t) {
      float *row = f.data() + t * kFrameLevelSize;
      row[kSumSquares] = 50.0f * unit(rng);
      row[kPeak] = unit(rng);
      row[kClipped] = static_cast<float>(rng() % 3);
      row[kRealSamples] = 512;
      // Flux: low noise with spikes, sometimes all equal, sometimes all zero.
      row[kOnsetFlux] = trial % 10 == 0   ? 0.0f
                        : trial % 10 == 1 ? 2.0f
                        : (rng() % 9 == 0 ? 5.0f + 20.0f * unit(rng) : unit(rng));
    }
    const WindowLevel whole = WindowLevelOf(f.data(), n, 512, 16000.0);
    const int64_t split = std::uniform_int_distribution<int64_t>(0, n)(rng);
    const WindowLevel runs = WindowLevelOf(f.data(), split, f.data() + split * kFrameLevelSize,
                                           n - split, 512, 16000.0);
    const WindowLevel portable = WindowLevelOfPortable(f.data(), n, 512, 16000.0);
    same &= whole.ToString() == runs.ToString() && whole.rms_dbfs == runs.rms_dbfs &&
            whole.onsets == runs.onsets;
    same &= whole.ToString() == portable.ToString() && whole.rms_dbfs == portable.rms_dbfs &&
            whole.peak_dbfs == portable.peak_dbfs;
    double squares = 0, samples = 0, clipped = 0, flux_sum = 0;
    float peak = 0, flux_max = 0;
    for (int64_t t = 0; t < n; ++t) {
      const float *row = f.data() + t * kFrameLevelSize;
      squares += row[kSumSquares];
      samples += row[kRealSamples];
      clipped += row[kClipped];
      flux_sum += row[kOnsetFlux];
      peak = std::max(peak, row[kPeak]);
      flux_max = std::max(flux_max, row[kOnsetFlux]);
    }
    right &= whole.rms_dbfs == std::max(-120.0, 10.0 * std::log10(squares / samples)) &&
             whole.peak_dbfs == std::max(-120.0, 10.0 * std::log10(double(peak) * peak)) &&
             whole.clipped == static_cast<int64_t>(clipped) && whole.samples == n * 512;
    // The onsets by the rule, in double throughout.
    int64_t onsets = 0;
    bool ambiguous = false;  // a peak at the contrast floor, which float lanes may round over
    if (flux_max >= kMinOnsetFluxDb) {
      const double mean = flux_sum / n;
      const double threshold = std::max(kMinOnsetFluxDb, mean + kOnsetDelta * (flux_max - mean));
      double quiet = 0;
      int64_t quiet_count = 0;
      for (int64_t t = 0; t < n; ++t) {
        const float v = f[t * kFrameLevelSize + kOnsetFlux];
        if (v <= mean) quiet += v, ++quiet_count;
      }
      const double floor = kOnsetContrast * (quiet_count > 0 ? quiet / quiet_count : 0.0);
      int64_t last = 0;
      for (int64_t t = 0; t < n; ++t) {  // radius 1 and gap 2 at 31.25 rows a second
        auto at = [&](int64_t u) { return f[u * kFrameLevelSize + kOnsetFlux]; };
        const float v = at(t);
        if (v <= mean || v < threshold) continue;
        if ((t > 0 && !(v > at(t - 1))) || (t + 1 < n && !(v >= at(t + 1)))) continue;
        ambiguous |= std::fabs(v - floor) < 1e-4 * floor;
        if (v < floor || (onsets > 0 && t - last < 2)) continue;
        ++onsets;
        last = t;
      }
    }
    right &= ambiguous || whole.onsets == onsets;
    compared += !ambiguous && onsets > 0;
  }
  Check(compared > 100, "onsets compared in " + std::to_string(compared) + " windows");
  // A peak exactly at the threshold (here kMinOnsetFluxDb) is an onset, in the rounds of 8 and
  // in the rest after them.
  for (int64_t at : {int64_t{3}, int64_t{21}}) {
    std::vector<float> g(22 * kFrameLevelSize, 0.0f);
    for (int64_t t = 0; t < 22; ++t) {
      g[t * kFrameLevelSize + kRealSamples] = 512;
      g[t * kFrameLevelSize + kOnsetFlux] = 0.01f;
    }
    g[at * kFrameLevelSize + kOnsetFlux] = static_cast<float>(kMinOnsetFluxDb);
    same &= WindowLevelOf(g.data(), 22, 512, 16000.0).onsets == 1 &&
            WindowLevelOfPortable(g.data(), 22, 512, 16000.0).onsets == 1;
  }
  // The background is summed in the header's layout (8 float lanes, value t in lane t % 8, a
  // fixed tree), not in order: a peak between the two sums' contrast floors is an onset by the
  // lanes' floor, in the portable and the AVX2 scan alike.
  bool split_found = false;
  std::uniform_real_distribution<float> band(0.30f, 0.31f);
  for (int trial = 0; trial < 10000 && !split_found; ++trial) {
    std::vector<float> quiet(31);
    for (float &v : quiet) v = band(rng);
    float lanes[8] = {}, in_order = 0.0f;
    for (int t = 0, q = 0; t < 32; ++t) {
      if (t == 5) continue;  // the peak's place
      lanes[t % 8] += quiet[static_cast<size_t>(q)];
      in_order += quiet[static_cast<size_t>(q++)];
    }
    const float tree = ((lanes[0] + lanes[1]) + (lanes[2] + lanes[3])) +
                       ((lanes[4] + lanes[5]) + (lanes[6] + lanes[7]));
    const double by_lanes = kOnsetContrast * tree / 31.0, by_order = kOnsetContrast * in_order / 31.0;
    // The smallest float at or above the lower floor, if it is below the other.
    float peak = static_cast<float>(std::min(by_lanes, by_order));
    if (peak < std::min(by_lanes, by_order)) peak = std::nextafter(peak, 2.0f);
    if (!(peak < std::max(by_lanes, by_order)) || peak < kMinOnsetFluxDb) continue;
    split_found = true;
    std::vector<float> g(32 * kFrameLevelSize, 0.0f);
    for (int t = 0, q = 0; t < 32; ++t) {
      g[t * kFrameLevelSize + kRealSamples] = 512;
      g[t * kFrameLevelSize + kOnsetFlux] = t == 5 ? peak : quiet[static_cast<size_t>(q++)];
    }
    const int64_t want = peak >= by_lanes ? 1 : 0;
    same &= WindowLevelOf(g.data(), 32, 512, 16000.0).onsets == want &&
            WindowLevelOfPortable(g.data(), 32, 512, 16000.0).onsets == want;
  }
  Check(split_found, "a window whose background differs summed in lanes and in order");
  Check(same, "a window's level over two runs equals one run's, and the portable one's, bitwise");
  Check(right, "a window's level equals the plain reference");
}

// A block fed to BlockMeter in random pieces gives MeasureBlock's numbers for the whole block,
// bitwise, clipped samples and waiting rounds included.
void TestBlockMeterPieces() {
  std::mt19937 rng(23);
  bool same = true;
  for (int trial = 0; trial < 300; ++trial) {
    const size_t n = std::uniform_int_distribution<size_t>(0, 700)(rng);
    std::vector<float> x = Noise(n, 100 + trial);
    if (trial % 3 == 0) {
      for (size_t i = 0; i < n; i += 29) x[i] = i % 2 ? 0.9995f : -1.0f;
    }
    float whole[kFrameLevelSize] = {}, pieces[kFrameLevelSize] = {};
    MeasureBlock(x.data(), static_cast<int64_t>(n), whole);
    BlockMeter meter;
    size_t i = 0;
    while (i < n) {
      const size_t take = std::min(n - i, std::uniform_int_distribution<size_t>(0, 70)(rng));
      meter.Add(x.data() + i, static_cast<int64_t>(take));
      i += take;
    }
    same &= meter.Samples() == static_cast<int64_t>(n) && meter.PartFinite();
    same &= meter.Finish(pieces);
    same &= std::memcmp(whole, pieces, kOnsetFlux * sizeof(float)) == 0;
    same &= meter.Samples() == 0;  // empty for the next block
  }
  Check(same, "a block measured in pieces equals MeasureBlock bitwise");
  for (int64_t length : {1, 31, 32, 97, 256, 512}) {
    const std::vector<float> x = Noise(static_cast<size_t>(7 * length), 7 + length);
    std::vector<float> blocks(7 * 6, -1.0f);
    bool finite = MeasureBlocks(x.data(), 7, length, blocks.data(), 6);
    for (int64_t k = 0; k < 7; ++k) {
      float one[kFrameLevelSize];
      MeasureBlock(x.data() + k * length, length, one);
      finite &= std::memcmp(one, blocks.data() + 6 * k, kOnsetFlux * sizeof(float)) == 0 &&
                blocks[6 * k + 4] == -1.0f && blocks[6 * k + 5] == -1.0f;
    }
    Check(finite, "MeasureBlocks equals MeasureBlock block by block, length " +
                      std::to_string(length));
  }
  BlockMeter meter;
  const float bad[] = {0.5f, NAN, 0.25f};
  meter.Add(bad, 3);
  Check(!meter.PartFinite(), "a NaN makes the part not finite");
  float level[kFrameLevelSize];
  Check(!meter.Finish(level) && meter.PartFinite(), "a NaN makes the block not finite");
  const float huge[] = {1e20f};
  meter.Add(huge, 1);
  Check(!meter.Finish(level) && std::isinf(level[kSumSquares]),
        "a square above FLT_MAX: an infinite sum, reported as not finite");
}

// Levels measured on the input: a chunk with NaN or infinite samples is measured cleaned (as
// the frames are), whatever the chunking; levels turned on after samples arrived but before the
// first frame measure those samples too.
void TestStreamedLevelEdges() {
  std::mt19937 rng(29);
  for (const LogMelOptions &o : LevelVariants()) {
    if (o.hop_length > o.n_fft) continue;  // measured in the frames' samples instead
    std::vector<float> x = Noise(9000, 31), clean = x;
    for (size_t i = 700; i < 760; ++i) x[i] = NAN, clean[i] = 0.0f;
    x[4001] = INFINITY, clean[4001] = 0.0f;
    x[8999] = -INFINITY, clean[8999] = 0.0f;
    const Fed want = FeedWithLevels(o, clean, {});
    bool same = true;
    for (int trial = 0; trial < 4; ++trial) {
      std::vector<int64_t> chunks;
      const int64_t sizes[] = {1, 3, 64, 255, 1000};
      for (int k = 0; k < 60; ++k) chunks.push_back(sizes[rng() % 5]);
      const Fed got = FeedWithLevels(o, x, chunks);
      same &= BitwiseEqual(got.levels, want.levels) && BitwiseEqual(got.frames, want.frames);
    }
    Check(same, "non-finite samples are measured as 0 in any chunking, n_fft " +
                    std::to_string(o.n_fft) + " hop " + std::to_string(o.hop_length));

    OnlineLogMel late(o);
    const int64_t before = std::max<int64_t>(1, o.n_fft / 2 - 1);  // no frame yet
    late.AcceptWaveform(clean.data(), before);
    Check(late.FramesReady() == 0, "no frame before the first n_fft / 2 samples");
    late.KeepLevels(1 << 16);
    late.AcceptWaveform(clean.data() + before, static_cast<int64_t>(clean.size()) - before);
    late.InputFinished();
    std::vector<float> levels(static_cast<size_t>(late.LevelRowCount(
                                  late.FramesReady(), late.FramesReady())) *
                              kFrameLevelSize);
    late.FrameLevels(late.FramesReady(), late.FramesReady(), levels.data());
    Check(BitwiseEqual(levels, want.levels), "levels turned on after the first samples");
  }
}

void TestLevelErrors() {
  const LogMelOptions o = LogMelOptions::Preset("musicnn");
  const std::vector<float> x = Noise(256 * 60, 5);
  CheckThrows<std::runtime_error>([&] {
    OnlineLogMel fe(o);
    fe.AcceptWaveform(x.data(), 4000);
    fe.WindowLevel(1, 1);
  }, "window level with levels off");
  CheckThrows<std::runtime_error>([&] {
    OnlineLogMel fe(o);
    fe.AcceptWaveform(x.data(), 4000);
    fe.KeepLevels(10);
  }, "levels turned on after frames");
  CheckThrows<std::invalid_argument>([&] { OnlineLogMel(o).KeepLevels(-1); }, "keep -1");
  OnlineLogMel fe(o);
  fe.KeepLevels(10);
  fe.AcceptWaveform(x.data(), static_cast<int64_t>(x.size()));  // 60 frames before the end
  const int64_t ready = fe.FramesReady();
  Check(ready == 60, "frames ready before the end: " + std::to_string(ready));
  fe.WindowLevel(ready, 10);
  CheckThrows<std::out_of_range>([&] { fe.WindowLevel(ready + 1, 2); }, "not computed yet");
  CheckThrows<std::out_of_range>([&] { fe.WindowLevel(ready, 11); }, "no longer kept");
  CheckThrows<std::invalid_argument>([&] { fe.WindowLevel(ready, 0); }, "length 0");
  // musicnn's 16-ms frames are kept in steps of two: a row ends at every odd frame.
  Check(fe.LevelStep() == 2 && fe.LevelRowCount(ready, 10) == 5 &&
            fe.LevelRowCount(ready - 1, 9) == 4 && fe.LevelRowCount(ready - 1, 8) == 4,
        "musicnn's rows: a step of two frames");
  CheckThrows<std::invalid_argument>([&] { fe.WindowLevel(ready - 1, 1); },
                                     "a range holding no step's last frame");
  std::vector<float> before(5 * kFrameLevelSize), after(3 * kFrameLevelSize);
  fe.FrameLevels(ready, 10, before.data());
  fe.KeepLevels(5);  // keeps the newest
  fe.FrameLevels(ready, 5, after.data());
  Check(fe.LevelRowCount(ready, 5) == 3 &&
            std::equal(after.begin(), after.end(), before.begin() + 2 * kFrameLevelSize),
        "shrinking the ring keeps the newest frames");
  fe.InputFinished();
  fe.WindowLevel(fe.FramesReady(), 5);
  fe.WindowLevel(fe.FramesReady(), 1);  // the last step ends with the last frame
  fe.Reset();
  CheckThrows<std::out_of_range>([&] { fe.WindowLevel(1, 1); }, "reset forgets the levels");
  fe.AcceptWaveform(x.data(), 2000);
  Check(fe.LevelFramesKept() == 5 && fe.FramesReady() > 0, "levels stay on after reset");
  fe.WindowLevel(fe.FramesReady(), 2);
}

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
  TestRealFftAgainstDft();
  TestChunkInvariance();
  TestNonFiniteInput();
  TestErrors();
  TestFrameRing();
  TestJsonNumbers();
  TestLevelChunkInvariance();
  TestSineAndSilenceLevels();
  TestWindowLevelOf();
  TestWindowLevelRuns();
  TestLevelKernels();
  TestBlockMeterPieces();
  TestStreamedLevelEdges();
  TestLevelErrors();
  TestLoudnessMeter();
  std::printf("core_tests: %d passed, %d failed\n", passed, failed);
  return failed == 0 ? 0 : 1;
}
