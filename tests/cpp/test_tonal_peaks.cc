// tonal_peaks.h: peaks on spectra made for them (held, gliding, flat, hostile), the band, the
// window features, and the errors; and OnlineLogMel's tonal rows on a sine and on noise.
#include <cfloat>
#include <cmath>
#include <stdexcept>
#include <vector>

#include "check.h"
#include "online_log_mel.h"
#include "tonal_peaks.h"

using namespace streamtag;
using namespace streamtag_test;

namespace {

constexpr int kFft = 1024;
constexpr double kRate = 16000.0;
constexpr int kBins = kFft / 2 + 1;

// A spectrum at 1e-4 with peaks of 1.0 at the given bins.
std::vector<float> Spectrum(const std::vector<int> &peaks) {
  std::vector<float> p(kBins, 1e-4f);
  for (int k : peaks) p[k] = 1.0f;
  return p;
}

void TestTheBand() {
  TonalPeaks t(kFft, kRate);
  Check(t.LowBin() == 6 && t.HighBin() == 320, "100 Hz-5 kHz is bins 6-320 at 1024 points, 16 kHz");
  TonalPeaks low(kFft, 8000.0);
  Check(low.HighBin() == kBins - 2, "the band stops two bins short of Nyquist at 8 kHz");
}

void TestAHeldNoteIsStableFromTheThirdFrame() {
  TonalPeaks t(kFft, kRate);
  const std::vector<float> p = Spectrum({50, 100});
  float row[kTonalRowSize];
  for (int f = 0; f < 5; ++f) {
    t.Frame(p.data(), row);
    Check(row[kPeaks] == 2.0f, "two peaks every frame");
    Check(row[kStablePeaks] == (f >= 2 ? 2.0f : 0.0f), "stable from the third frame on");
    Check(std::fabs(row[kStablePower] - (f >= 2 ? 2.0f : 0.0f)) < 1e-6f, "their power");
    Check(std::fabs(row[kBandPower] - (2.0f + 312 * 1e-4f)) < 1e-4f, "the band's power");
  }
  t.Reset();
  t.Frame(p.data(), row);
  Check(row[kStablePeaks] == 0.0f, "after Reset the next frame is a first one");
}

void TestAPeakMayMoveABinAFrame() {
  TonalPeaks t(kFft, kRate);
  float row[kTonalRowSize];
  for (int f = 0; f < 6; ++f) {  // vibrato within a bin: stable
    const std::vector<float> p = Spectrum({60 + (f % 2)});
    t.Frame(p.data(), row);
  }
  Check(row[kStablePeaks] == 1.0f, "a peak moving a bin back and forth stays stable");
  TonalPeaks glide(kFft, kRate);
  for (int f = 0; f < 6; ++f) {  // a formant gliding 3 bins a frame: never stable
    const std::vector<float> p = Spectrum({60 + 3 * f});
    glide.Frame(p.data(), row);
    Check(row[kPeaks] == 1.0f && row[kStablePeaks] == 0.0f, "a glide is a peak, never stable");
  }
}

void TestWhatIsNotAPeak() {
  TonalPeaks t(kFft, kRate);
  float row[kTonalRowSize];
  std::vector<float> p(kBins, 1e-4f);
  p[50] = 9e-4f;  // 9.5 dB over the median: not enough
  p[80] = 1.0f, p[82] = 1.0f;  // two bins apart: neither is above both neighbours each side
  p[3] = 1.0f;  // under 100 Hz
  p[400] = 1.0f;  // over 5 kHz
  t.Frame(p.data(), row);
  Check(row[kPeaks] == 0.0f, "none of these is a peak");
  std::vector<float> silence(kBins, 0.0f);
  t.Frame(silence.data(), row);
  Check(row[kPeaks] == 0.0f && row[kBandPower] == 0.0f, "silence: no peaks, no power");
}

void TestHostilePowersStayDefined() {
  TonalPeaks t(kFft, kRate);
  float row[kTonalRowSize];
  std::vector<float> p = Spectrum({70});
  p[90] = INFINITY;
  p[91] = NAN;
  for (int f = 0; f < 3; ++f) t.Frame(p.data(), row);
  for (float v : row) Check(std::isfinite(v), "rows stay finite with infinite and NaN powers");
  double out[kTonalFeatureCount];
  TonalWindowFeatures(row, 1, out);
  Check(out[0] >= 0 && out[0] <= 1, "a power share between 0 and 1");
}

void TestWindowFeatures() {
  // frames: band 10, 4 peaks, 2 stable with power 5; band 10, 2 peaks, 0 stable
  const std::vector<float> rows = {10, 4, 2, 5, 10, 2, 0, 0};
  double out[kTonalFeatureCount];
  TonalWindowFeatures(rows.data(), 2, out);
  Check(std::fabs(out[0] - 0.25) < 1e-12, "stable power share 5 / 20");
  Check(std::fabs(out[1] - 1.0) < 1e-12, "one stable peak a frame");
  Check(std::fabs(out[2] - 2.0 / 6.0) < 1e-12, "two of six peaks stable");
  const std::vector<float> quiet = {0, 0, 0, 0};
  TonalWindowFeatures(quiet.data(), 1, out);
  Check(out[0] == 0 && out[1] == 0 && out[2] == 0, "a silent window: zeros");
  CheckThrows<std::invalid_argument>([&] { TonalWindowFeatures(rows.data(), 0, out); },
                                     "no rows");
  std::vector<float> bad = rows;
  bad[5] = NAN;
  CheckThrows<std::invalid_argument>([&] { TonalWindowFeatures(bad.data(), 2, out); }, "a NaN");
  CheckThrows<std::invalid_argument>([] { TonalPeaks(4, kRate); }, "an FFT of 4 points");
  CheckThrows<std::invalid_argument>([] { TonalPeaks(kFft, 0.0); }, "a rate of 0");
}

LogMelOptions ContentLike() {
  LogMelOptions o;
  o.sample_rate = kRate;
  o.n_fft = kFft;
  o.hop_length = 512;
  o.n_mels = 64;
  o.fmin = 60.0;
  o.fmax = 8000.0;
  o.log = "db";
  o.db_multiplier = 10.0;
  return o;
}

// Rows of a whole signal, fed in chunks of `chunk` samples.
std::vector<float> TonalRows(const std::vector<float> &x, int64_t chunk, int64_t *frames) {
  OnlineLogMel mel(ContentLike());
  mel.KeepTonal(true);
  std::vector<float> rows;
  auto drain = [&] {
    std::vector<float> r(static_cast<size_t>(mel.TonalPending()) * kTonalRowSize);
    mel.PopTonal(r.data(), -1);
    rows.insert(rows.end(), r.begin(), r.end());
  };
  for (int64_t i = 0; i < int64_t(x.size()); i += chunk) {
    mel.AcceptWaveform(x.data() + i, std::min<int64_t>(chunk, int64_t(x.size()) - i));
    drain();
  }
  mel.InputFinished();
  drain();
  *frames = mel.FramesReady();
  return rows;
}

void TestOnlineLogMelRows() {
  const int n = 3 * 16000;
  std::vector<float> sine(n), noise = Noise(n, 7);
  for (int i = 0; i < n; ++i) sine[i] = 0.3f * float(std::sin(2 * M_PI * 440.0 * i / kRate));
  int64_t frames = 0;
  const std::vector<float> a = TonalRows(sine, 16000, &frames);
  Check(int64_t(a.size()) == frames * kTonalRowSize, "one row per frame");
  for (int64_t chunk : {1, 333, 4096}) {
    int64_t f2 = 0;
    Check(TonalRows(sine, chunk, &f2) == a, "the same rows whatever the chunking");
  }
  double held[kTonalFeatureCount], hiss[kTonalFeatureCount];
  TonalWindowFeatures(a.data() + 4 * kTonalRowSize, frames - 8, held);
  const std::vector<float> b = TonalRows(noise, 16000, &frames);
  TonalWindowFeatures(b.data() + 4 * kTonalRowSize, frames - 8, hiss);
  // a Hann window spreads a sine over its main lobe: its peak bin holds about two thirds
  Check(held[0] > 0.5 && held[1] == 1.0 && held[2] > 0.9, "a sine's peak is stable");
  Check(hiss[0] < 0.05 && hiss[2] < 0.3, "white noise's are not");
  OnlineLogMel mel(ContentLike());
  mel.AcceptWaveform(sine.data(), 4096);
  CheckThrows<std::runtime_error>([&] { mel.KeepTonal(true); }, "turned on after frames");
  mel.Reset();
  mel.KeepTonal(true);
  Check(mel.TonalKept(), "on after Reset");
  mel.KeepTonal(false);
  Check(!mel.TonalKept() && mel.TonalPending() == 0, "and off");
}

}  // namespace

int main() {
  TestTheBand();
  TestAHeldNoteIsStableFromTheThirdFrame();
  TestAPeakMayMoveABinAFrame();
  TestWhatIsNotAPeak();
  TestHostilePowersStayDefined();
  TestWindowFeatures();
  TestOnlineLogMelRows();
  return Summary("test_tonal_peaks");
}
