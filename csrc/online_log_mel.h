// Incremental log-mel spectrogram of one stream. Feed samples in chunks of any size; each frame is
// computed as soon as its samples are in, and any chunking yields bitwise the same frames as one
// call with the whole signal (the same code computes every frame; only where its samples come
// from differs). Frame t is centred on sample t * hop_length when center is set (librosa's
// framing, zero or reflect padding at both ends), else it starts there.
//
// Not thread-safe: one instance per stream. Different instances share nothing.
#ifndef STREAMTAG_ONLINE_LOG_MEL_H_
#define STREAMTAG_ONLINE_LOG_MEL_H_

#include <cstdint>
#include <vector>

#include "fft.h"
#include "log_mel_options.h"
#include "mel_filterbank.h"

namespace streamtag {

class OnlineLogMel {
 public:
  explicit OnlineLogMel(const LogMelOptions &opts);  // throws std::invalid_argument

  const LogMelOptions &Options() const { return opts_; }
  int NumMels() const { return opts_.n_mels; }

  // Appends n samples and computes the frames they complete. NaN and infinite samples are
  // replaced by 0 and counted. Throws std::runtime_error after InputFinished().
  void AcceptWaveform(const float *samples, int64_t n);

  // Declares the end of the signal: the tail padding is applied and the last frames computed.
  void InputFinished();
  bool IsFinished() const { return finished_; }

  int64_t FramesReady() const { return next_frame_; }  // absolute count computed since Reset
  int64_t FramesPopped() const { return frames_popped_; }
  int64_t FramesPending() const { return next_frame_ - frames_popped_; }
  int64_t SamplesAccepted() const { return received_; }
  int64_t NonfiniteSamples() const { return nonfinite_; }

  // Moves up to max_frames pending frames (all when max_frames < 0) into out, row-major
  // (frames x n_mels). Returns how many were written.
  int64_t Pop(float *out, int64_t max_frames);

  // Resets, then computes a whole signal's frames straight into out
  // (NumFramesFor(n) x n_mels, row-major): the frames any chunking yields, without the copy
  // through the pending queue. Returns the frame count.
  int64_t ComputeAll(const float *samples, int64_t n, float *out);

  // Forgets the signal; the next sample is sample 0 again.
  void Reset();

  // Number of frames a whole signal of num_samples yields (after InputFinished).
  int64_t NumFramesFor(int64_t num_samples) const;

 private:
  int64_t FrameStart(int64_t t) const { return t * opts_.hop_length - pad_; }
  bool FrameCompleteBeforeEnd(int64_t t) const;
  float SampleAt(int64_t index, const float *chunk, int64_t chunk_start) const;
  void EmitFrames(const float *chunk, int64_t chunk_start, bool at_end);
  const float *FrameSamples(int64_t t, const float *chunk, int64_t chunk_start, float *stitch);
  void ComputeFrame(const float *samples, float *out);
  // Four consecutive frames at once (one per SIMD lane), bitwise equal to ComputeFrame's.
  void ComputeFrames4(const float *const samples[4], float *out);
  void ApplyLog(float *out) const;
  simd::V4 LogForm(simd::V4 x) const;
  void KeepTail(const float *chunk, int64_t chunk_start);

  LogMelOptions opts_;
  int n_fft_;
  int64_t pad_;
  bool reflect_;
  std::vector<float> window_;
  MelFilterbank mel_;
  RealFft fft_;

  // Retained samples: x[buffer_start_ .. buffer_start_ + buffer_.size()).
  std::vector<float> buffer_;
  int64_t buffer_start_ = 0;
  int64_t received_ = 0;
  int64_t next_frame_ = 0;
  int64_t frames_popped_ = 0;
  int64_t nonfinite_ = 0;
  bool finished_ = false;
  std::vector<float> pending_;  // computed, not yet popped frames, row-major
  float *direct_out_ = nullptr;  // set during ComputeAll: frames go straight there

  bool magnitude_ = false, apply_log_ = true;
  float log_scale_ = 1.0f, log_gain_ = 1.0f, log_offset_ = 0.0f, log_floor_ = 1e-10f;

  // Scratch, reused for every frame.
  std::vector<float> clean_, stitched_, windowed_, spec_re_, spec_im_;
  std::vector<simd::V4> windowed4_, spec4_re_, spec4_im_, mels4_;
};

}  // namespace streamtag

#endif  // STREAMTAG_ONLINE_LOG_MEL_H_
