// A small test driver for the C++ core, built with AddressSanitizer + UndefinedBehaviorSanitizer
// in CI (cmake -DSTREAMTAG_CORE_TESTS=ON -DSTREAMTAG_SANITIZE=ON). It exercises every path the
// Python tests do, so the sanitizers see the real workload: FFT sizes of every radix, chunkings
// that split frames everywhere, padding at both ends of short signals, the four-frame path,
// the frame ring's wrap-around and the error paths.
#include <cmath>
#include <complex>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#include "fft.h"
#include "frame_ring.h"
#include "json_numbers.h"
#include "log_mel_options.h"
#include "mel_filterbank.h"
#include "online_log_mel.h"

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

}  // namespace

int main() {
  TestRealFftAgainstDft();
  TestChunkInvariance();
  TestNonFiniteInput();
  TestErrors();
  TestFrameRing();
  TestJsonNumbers();
  std::printf("core_tests: %d passed, %d failed\n", passed, failed);
  return failed == 0 ? 0 : 1;
}
