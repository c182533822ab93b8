// Loudness as EBU R128 measures it (ITU-R BS.1770-4, EBU Tech 3341), at the audio's own sample
// rate and per channel, before any downmix or resampling: each channel K-weighted (a high
// shelf, then a high-pass), its mean square taken over 100 ms blocks, the channels' mean
// squares added with their weights. A block's power P gives loudness -0.691 + 10 log10(P) LUFS;
// momentary loudness is the mean power of the last 4 blocks (400 ms), short-term of the last 30
// (3 s), and integrated loudness gates 400 ms blocks (LoudnessOfBlocks, in Python:
// streamtag.audio.loudness).
//
// The filters' coefficients are derived for any rate from the analog prototype that BS.1770's
// 48 kHz table was made from (the bilinear transform at that rate), so 44.1 kHz and 48 kHz
// measure the same loudness; at 48 kHz they equal the table's (a test checks them to 1e-8).
// Every rate's high-pass keeps the 48 kHz table's passband gain (+0.043 dB). Below 32 kHz the
// transform's warping lifts content near Nyquist (3 kHz at 8 kHz reads +0.4 dB).
#ifndef STREAMTAG_LOUDNESS_METER_H_
#define STREAMTAG_LOUDNESS_METER_H_

#include <cstdint>
#include <string>
#include <vector>

namespace streamtag {

constexpr double kLoudnessOffset = -0.691;  // BS.1770: L = -0.691 + 10 log10(sum G_i z_i)
constexpr double kSilenceLufs = -120.0;  // the floor of a reading: digital silence
constexpr int kMaxLoudnessChannels = 64;

// One biquad's coefficients, a0 = 1: y = b0 x + b1 x1 + b2 x2 - a1 y1 - a2 y2.
struct Biquad {
  double b0 = 1.0, b1 = 0.0, b2 = 0.0, a1 = 0.0, a2 = 0.0;
};

// BS.1770's two K-weighting stages for a sample rate (8 kHz .. 768 kHz, else
// std::invalid_argument): the shelf (stage 1) and the high-pass (stage 2).
void KWeighting(double sample_rate, Biquad *shelf, Biquad *high_pass);

// A block's power in LUFS: -0.691 + 10 log10(power), kSilenceLufs for power <= 0 or below it.
double LoudnessOfPower(double power);

class LoudnessMeter {
 public:
  // One weight per channel, each finite and in [0, 10] (BS.1770: 1.0 for left, right and
  // centre, 1.41 for the surrounds, 0 for LFE); 1 .. kMaxLoudnessChannels channels. Throws
  // std::invalid_argument naming the problem.
  LoudnessMeter(double sample_rate, const std::vector<double> &channel_weights);

  // frames x channels samples: interleaved (frame 0's channels first) or, when planar, one
  // run of `frames` samples per channel. A non-finite sample counts as 0 (and in
  // NonfiniteSamples): it would otherwise poison the filters for good.
  void AcceptWaveform(const float *samples, int64_t frames, bool planar = false);

  // Blocks completed and not yet popped, and moving them out: out[0 .. n) gets the oldest n
  // block powers (n <= BlocksReady(), else std::out_of_range).
  int64_t BlocksReady() const { return static_cast<int64_t>(ready_.size()); }
  void PopBlocks(double *out, int64_t n);

  // Samples per channel in one 100 ms block: the rate / 10, rounded.
  int64_t BlockLength() const { return block_length_; }
  int64_t FramesAccepted() const { return frames_accepted_; }
  int64_t BlocksCompleted() const { return blocks_completed_; }
  int64_t NonfiniteSamples() const { return nonfinite_; }
  int Channels() const { return static_cast<int>(weights_.size()); }
  double SampleRate() const { return sample_rate_; }

  // Forgets the filters' state, the partial block and the blocks not popped; the counts start
  // again from 0.
  void Reset();

  std::string ToString() const;

 private:
  struct ChannelState {
    double s1 = 0.0, s2 = 0.0;  // the shelf's state (transposed direct form II)
    double t1 = 0.0, t2 = 0.0;  // the high-pass's
    double sum_squares = 0.0;   // of the K-weighted samples in the current block
  };

  void FinishBlock();
  // N channels' samples (channel c's at x + c * plane, its frames `stride` floats apart)
  // through their filters into their blocks' sums; returns the non-finite samples taken as 0.
  template <int N>
  int64_t Filter(const float *x, int64_t plane, int64_t frames, int stride,
                 ChannelState *state) const;

  double sample_rate_;
  std::vector<double> weights_;
  Biquad shelf_, high_pass_;
  int64_t block_length_;
  std::vector<ChannelState> state_;
  int64_t in_block_ = 0;  // frames of the current block so far
  int64_t frames_accepted_ = 0, blocks_completed_ = 0, nonfinite_ = 0;
  std::vector<double> ready_;
};

}  // namespace streamtag

#endif  // STREAMTAG_LOUDNESS_METER_H_
