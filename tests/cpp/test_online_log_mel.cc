// online_log_mel.h: frames bitwise the same for any chunking, padding at both ends of short
// signals, the four-frame path, non-finite input; the levels and onsets it keeps, against
// their definition and in any chunking; the error paths.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#include "check.h"
#include "log_mel_options.h"
#include "online_log_mel.h"
#include "window_level.h"

using namespace streamtag;
using namespace streamtag_test;

namespace {

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
    o.hop_length = 0;
    OnlineLogMel fe(o);
  }, "hop_length zero");
  CheckThrows<std::runtime_error>([] {
    OnlineLogMel fe{LogMelOptions()};
    fe.InputFinished();
    float x = 0;
    fe.AcceptWaveform(&x, 1);
  }, "audio after input_finished");
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


}  // namespace

int main() {
  TestChunkInvariance();
  TestNonFiniteInput();
  TestErrors();
  TestLevelChunkInvariance();
  TestSineAndSilenceLevels();
  TestStreamedLevelEdges();
  TestLevelErrors();
  return Summary("test_online_log_mel");
}
