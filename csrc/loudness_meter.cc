#include "loudness_meter.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <stdexcept>
#include <type_traits>

namespace streamtag {

namespace {

constexpr double kPi = 3.14159265358979323846;

// The analog prototype of BS.1770's K-weighting: a second-order high shelf of +4 dB centred
// near 1.7 kHz (the head's effect) and a second-order high-pass near 38 Hz (the revised
// low-frequency B curve). These are the parameters whose bilinear transform at 48 kHz gives
// the standard's table; the transform at another rate gives that rate's filter.
constexpr double kShelfHz = 1681.974450955533;
constexpr double kShelfGainDb = 3.999843853973347;
constexpr double kShelfQ = 0.7071752369554196;
constexpr double kShelfBandExponent = 0.4996667741545416;  // Vb = Vh ^ this
constexpr double kHighPassHz = 38.13547087602444;
constexpr double kHighPassQ = 0.5003270373238773;

// Blocks kept for the caller at most (an hour and 49 minutes): one that never pops loses the
// oldest rather than growing without end.
constexpr size_t kMaxReadyBlocks = 1 << 16;

// An IIR's state below this is a denormal in the making (silence after sound decays to them,
// and they are slow on every CPU): set to 0 at each block's end. 1e-30 of full scale is 600 dB
// under any signal.
constexpr double kStateFloor = 1e-30;

inline double Flushed(double v) { return std::fabs(v) < kStateFloor ? 0.0 : v; }

}  // namespace

void KWeighting(double sample_rate, Biquad *shelf, Biquad *high_pass) {
  if (!(sample_rate >= 8000.0 && sample_rate <= 768000.0)) {
    throw std::invalid_argument(
        "loudness: the sample rate must be between 8000 and 768000 Hz (K-weighting's shelf "
        "sits at 1.7 kHz), got " + std::to_string(sample_rate));
  }
  double k = std::tan(kPi * kShelfHz / sample_rate);
  const double vh = std::pow(10.0, kShelfGainDb / 20.0);
  const double vb = std::pow(vh, kShelfBandExponent);
  double a0 = 1.0 + k / kShelfQ + k * k;
  shelf->b0 = (vh + vb * k / kShelfQ + k * k) / a0;
  shelf->b1 = 2.0 * (k * k - vh) / a0;
  shelf->b2 = (vh - vb * k / kShelfQ + k * k) / a0;
  shelf->a1 = 2.0 * (k * k - 1.0) / a0;
  shelf->a2 = (1.0 - k / kShelfQ + k * k) / a0;

  auto high_pass_poles = [](double rate, double *a1, double *a2) {
    const double kk = std::tan(kPi * kHighPassHz / rate);
    const double d = 1.0 + kk / kHighPassQ + kk * kk;
    *a1 = 2.0 * (kk * kk - 1.0) / d;
    *a2 = (1.0 - kk / kHighPassQ + kk * kk) / d;
  };
  high_pass_poles(sample_rate, &high_pass->a1, &high_pass->a2);
  // BS.1770's table keeps the numerator 1, -2, 1 unnormalised, which gives its 48 kHz filter
  // a passband gain of 4 / (1 - a1 + a2) = +0.043 dB; the same numerator at a lower rate would
  // gain more (+0.26 dB at 8 kHz). Scaled so that every rate has the 48 kHz table's gain: at
  // 48 kHz the scale is exactly 1.
  double a1_48 = 0.0, a2_48 = 0.0;
  high_pass_poles(48000.0, &a1_48, &a2_48);
  const double scale = (1.0 - high_pass->a1 + high_pass->a2) / (1.0 - a1_48 + a2_48);
  high_pass->b0 = scale;
  high_pass->b1 = -2.0 * scale;
  high_pass->b2 = scale;
}

double LoudnessOfPower(double power) {
  if (!(power > 0.0)) return kSilenceLufs;
  return std::max(kSilenceLufs, kLoudnessOffset + 10.0 * std::log10(power));
}

LoudnessMeter::LoudnessMeter(double sample_rate, const std::vector<double> &channel_weights)
    : sample_rate_(sample_rate), weights_(channel_weights) {
  KWeighting(sample_rate, &shelf_, &high_pass_);  // checks the rate
  if (weights_.empty() || weights_.size() > static_cast<size_t>(kMaxLoudnessChannels)) {
    throw std::invalid_argument("loudness: 1 to " + std::to_string(kMaxLoudnessChannels) +
                                " channels, got " + std::to_string(weights_.size()));
  }
  for (size_t c = 0; c < weights_.size(); ++c) {
    if (!(weights_[c] >= 0.0 && weights_[c] <= 10.0)) {
      throw std::invalid_argument("loudness: channel " + std::to_string(c) +
                                  "'s weight must be in [0, 10] (BS.1770: 1.0 front, 1.41 "
                                  "surround, 0 LFE), got " + std::to_string(weights_[c]));
    }
  }
  block_length_ = std::max<int64_t>(1, std::llround(sample_rate / 10.0));
  state_.assign(weights_.size(), ChannelState{});
}

void LoudnessMeter::Reset() {
  state_.assign(weights_.size(), ChannelState{});
  in_block_ = frames_accepted_ = blocks_completed_ = nonfinite_ = 0;
  ready_.clear();
}

void LoudnessMeter::FinishBlock() {
  double power = 0.0;
  for (size_t c = 0; c < state_.size(); ++c) {
    ChannelState &s = state_[c];
    power += weights_[c] * (s.sum_squares / static_cast<double>(block_length_));
    s.sum_squares = 0.0;
    s.s1 = Flushed(s.s1);
    s.s2 = Flushed(s.s2);
    s.t1 = Flushed(s.t1);
    s.t2 = Flushed(s.t2);
  }
  if (ready_.size() == kMaxReadyBlocks) ready_.erase(ready_.begin());
  ready_.push_back(power);
  ++blocks_completed_;
  in_block_ = 0;
}

void LoudnessMeter::AcceptWaveform(const float *samples, int64_t frames, bool planar) {
  if (frames < 0) {
    throw std::invalid_argument("loudness: frames must be >= 0, got " + std::to_string(frames));
  }
  const int channels = Channels();
  // Channel c's samples: interleaved, from samples + c every `channels` floats; planar, the
  // c-th run of `frames` floats.
  const int stride = planar ? 1 : channels;
  const int64_t plane = planar ? frames : 1;
  int64_t done = 0;
  while (done < frames) {
    const int64_t run = std::min(frames - done, block_length_ - in_block_);
    const float *x = samples + done * stride;
    int c = 0;
    for (; c + 2 <= channels; c += 2) {  // two channels' chains at once: their latency overlaps
      nonfinite_ += Filter<2>(x + c * plane, plane, run, stride, &state_[c]);
    }
    if (c < channels) nonfinite_ += Filter<1>(x + c * plane, plane, run, stride, &state_[c]);
    done += run;
    in_block_ += run;
    if (in_block_ == block_length_) FinishBlock();
  }
  frames_accepted_ += frames;
}

void LoudnessMeter::PopBlocks(double *out, int64_t n) {
  if (n < 0 || n > BlocksReady()) {
    throw std::out_of_range("loudness: pop_blocks(" + std::to_string(n) + ") with " +
                            std::to_string(BlocksReady()) + " blocks ready");
  }
  std::copy(ready_.begin(), ready_.begin() + n, out);
  ready_.erase(ready_.begin(), ready_.begin() + n);
}

namespace {

// Two channels' values side by side: GCC's and Clang's vector extension, two doubles in one
// SSE2 (NEON) register, so both channels' filters run in the same instructions. Each lane sees
// the same operations in the same order as the one-channel path: the same results, bitwise.
typedef double Pair __attribute__((vector_size(16)));

template <typename T>
struct Lanes;
template <>
struct Lanes<double> {
  static constexpr int kCount = 1;
  static double Load(const double *v) { return v[0]; }
  static void Store(double value, double *v) { v[0] = value; }
};
template <>
struct Lanes<Pair> {
  static constexpr int kCount = 2;
  static Pair Load(const double *v) { return Pair{v[0], v[1]}; }
  static void Store(Pair value, double *v) {
    v[0] = value[0];
    v[1] = value[1];
  }
};

// The next frame's samples of the channels in T, non-finite ones as 0 (counted).
inline double Sample(const float *x, int64_t, int64_t *nonfinite, double) {
  const float v = x[0];
  if (std::isfinite(v)) return v;
  ++*nonfinite;
  return 0.0;
}
inline Pair Sample(const float *x, int64_t plane, int64_t *nonfinite, Pair) {
  double a = x[0], b = x[plane];
  if (!(std::isfinite(a) && std::isfinite(b))) {  // rare: check each
    if (!std::isfinite(a)) a = 0.0, ++*nonfinite;
    if (!std::isfinite(b)) b = 0.0, ++*nonfinite;
  }
  return Pair{a, b};
}

}  // namespace

template <int N>
int64_t LoudnessMeter::Filter(const float *x, int64_t plane, int64_t frames, int stride,
                              ChannelState *state) const {
  using T = typename std::conditional<N == 2, Pair, double>::type;
  static_assert(Lanes<T>::kCount == N, "one lane per channel");
  // Each sample is one step of the shelf then of the high-pass, in transposed direct form II.
  const Biquad f = shelf_, h = high_pass_;
  double in[5][N];  // s1, s2, t1, t2, sum of each channel
  for (int c = 0; c < N; ++c) {
    in[0][c] = state[c].s1;
    in[1][c] = state[c].s2;
    in[2][c] = state[c].t1;
    in[3][c] = state[c].t2;
    in[4][c] = state[c].sum_squares;
  }
  T s1 = Lanes<T>::Load(in[0]), s2 = Lanes<T>::Load(in[1]), t1 = Lanes<T>::Load(in[2]),
    t2 = Lanes<T>::Load(in[3]), sum = Lanes<T>::Load(in[4]);
  int64_t nonfinite = 0;
  for (int64_t i = 0; i < frames; ++i, x += stride) {
    const T v = Sample(x, plane, &nonfinite, T{});
    // What does not wait for this sample's output is added first: the chain from one
    // sample's output to the next is then one add, one multiply and one subtract.
    const T y = f.b0 * v + s1;
    s1 = (f.b1 * v + s2) - f.a1 * y;
    s2 = f.b2 * v - f.a2 * y;
    const T z = h.b0 * y + t1;
    t1 = (h.b1 * y + t2) - h.a1 * z;
    t2 = h.b2 * y - h.a2 * z;
    sum += z * z;
  }
  Lanes<T>::Store(s1, in[0]);
  Lanes<T>::Store(s2, in[1]);
  Lanes<T>::Store(t1, in[2]);
  Lanes<T>::Store(t2, in[3]);
  Lanes<T>::Store(sum, in[4]);
  for (int c = 0; c < N; ++c) {
    state[c].s1 = in[0][c];
    state[c].s2 = in[1][c];
    state[c].t1 = in[2][c];
    state[c].t2 = in[3][c];
    state[c].sum_squares = in[4][c];
  }
  return nonfinite;
}

std::string LoudnessMeter::ToString() const {
  char text[160];
  std::snprintf(text, sizeof text,
                "sample_rate=%g channels=%d block_length=%lld frames_accepted=%lld "
                "blocks_completed=%lld",
                sample_rate_, Channels(), static_cast<long long>(block_length_),
                static_cast<long long>(frames_accepted_),
                static_cast<long long>(blocks_completed_));
  return text;
}

}  // namespace streamtag
