// window_level.h: a window's level and onsets from level rows (by hand, over a ring's two
// runs, against a plain reference); the wide kernels bitwise the portable ones; a block
// measured in pieces.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#include "check.h"
#include "window_level.h"

using namespace streamtag;
using namespace streamtag_test;

namespace {

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


}  // namespace

int main() {
  TestWindowLevelOf();
  TestWindowLevelRuns();
  TestLevelKernels();
  TestBlockMeterPieces();
  return Summary("test_window_level");
}
