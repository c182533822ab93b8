// Incremental log-mel spectrogram of one stream. Feed samples in chunks of any size; each frame is
// computed as soon as its samples are in, and any chunking yields bitwise the same frames as one
// call with the whole signal (the same code computes every frame; only where its samples come
// from differs). Frame t is centred on sample t * hop_length when center is set (librosa's
// framing, zero or reflect padding at both ends), else it starts there.
//
// Levels and onsets, off by default (KeepLevels), per level step: k = LevelStepFrames(...)
// consecutive frames (window_level.h; 1 for the default model's 32-ms hop, 2 for musicnn's
// 16-ms hop), row g holding frames [g * k, g * k + k). Each step owns a block of samples, so
// that consecutive steps' blocks partition the signal: [g * H - lead, g * H - lead + H) with
// H = k * hop and lead = hop / 2 (rounded down) with center, 0 without, intersected with the
// real signal [0, n) (padding, zero or reflected, is never counted). For hop <= n_fft each
// block is complete by the time its step's last frame is, so the blocks are measured on the
// input as it arrives, in the pass that checks every sample is finite (a block split across
// chunks waits in a BlockMeter): a block's numbers are MeasureBlock's on the whole block,
// bitwise the same for every chunking. Once the input is finished the last step (which may
// hold fewer than k frames) ends with the last frame and its block also takes the rest of the
// signal (at most hop / 2 samples with center, fewer than n_fft without), so the blocks of a
// finished signal cover every sample exactly once. When hop > n_fft (k = 1) a block is further
// clipped to its frame's samples and measured there: the samples between frames and after the
// last one are not counted. Per step (window_level.h's layout): the block's sum of squares,
// peak |x|, clipped samples (|x| >= kClipLevel) and real samples, and the onset flux: the mean
// over mel bands of max(0, m_a[b] - m_p[b]) of the log-mel frames a (the step's last) and p (the
// last of the step before), in dB (the log form's units times its dB per unit: 10 /
// db_multiplier for "db", 10 for log10's "log1p", 10 / ln 10 for "ln", each times 2 / power; 1
// for "none", which then measures power), 0 for step 0.
//
// Not thread-safe: one instance per stream. Different instances share nothing.
#ifndef STREAMTAG_ONLINE_LOG_MEL_H_
#define STREAMTAG_ONLINE_LOG_MEL_H_

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <memory>
#include <vector>

#include "fft.h"
#include "log_mel_options.h"
#include "mel_filterbank.h"
#include "simd.h"
#include "tonal_peaks.h"
#include "window_level.h"

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

  // Forgets the signal and the kept levels (keeping levels stays on); the next sample is
  // sample 0 again.
  void Reset();

  // Turns the level work on and keeps the per-step features (window_level.h) of the last
  // `frames` frames; 0, the default, turns it off, and then it costs nothing. Turning it on
  // must happen before the first frame is computed (the first flux needs the frame before it)
  // or after Reset(); changing a kept count keeps the newest frames. Throws
  // std::invalid_argument for frames outside [0, kMaxLevelFrames], std::runtime_error when
  // turned on after frames were computed.
  void KeepLevels(int64_t frames);
  int64_t LevelFramesKept() const { return level_frames_; }  // 0: off
  static constexpr int64_t kMaxLevelFrames = int64_t{1} << 22;  // 80 MB; 37 hours at 32 ms
  int LevelStep() const { return level_step_; }  // frames per level step (row)

  // The rows of frames [end_frame - length, end_frame): the steps whose last frame is in it.
  // Throws as WindowLevel does.
  int64_t LevelRowCount(int64_t end_frame, int64_t length) const;
  // Copies those rows to out (LevelRowCount x kFrameLevelSize, row-major).
  void FrameLevels(int64_t end_frame, int64_t length, float *out) const;

  // The level and onset rate of frames [end_frame - length, end_frame): of the level steps
  // whose last frame is in it (WindowLevelOf). Both throw std::runtime_error when levels are not
  // kept, std::invalid_argument for length < 1 or a range that holds no step's last frame
  // (length < LevelStep()), std::out_of_range naming what is kept when a frame asked for is not
  // computed yet (after InputFinished() the last frames are) or no longer kept.
  streamtag::WindowLevel WindowLevel(int64_t end_frame, int64_t length) const;

  // Turns the tonal rows on (tonal_peaks.h: each frame's band power, peaks, stable peaks and
  // their power, read from the frame's power spectrum at the FFT's resolution) or off; off by
  // default, and then they cost nothing. Like levels, turned on before the first frame is
  // computed or after Reset(), else std::runtime_error. Each frame computed adds its row to a
  // queue of its own, which PopTonal empties (rows, like frames, in order).
  void KeepTonal(bool on);
  bool TonalKept() const { return tonal_ != nullptr; }
  int64_t TonalPending() const {
    return static_cast<int64_t>(tonal_pending_.size()) / kTonalRowSize;
  }
  // Moves up to max_rows pending tonal rows (all when max_rows < 0) into out (rows x
  // kTonalRowSize, row-major). Returns how many were written.
  int64_t PopTonal(float *out, int64_t max_rows);

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
  // Measures frame t's block in its samples and its flux (mels against prev_mels), where the
  // blocks are not measured on the input (hop > n_fft, one frame a step).
  void MeasureFrame(int64_t t, const float *samples, const float *mels, const float *prev_mels);
  // With hop <= n_fft the steps' blocks partition the signal [0, n) (block g is
  // [g * H - block_lead_, (g + 1) * H - block_lead_) from 0, H = row_hop_), and each is complete
  // by the time its step's last frame is: so they are measured on the input as it arrives, in
  // the same pass that checks it is finite (the frame's samples are not read again).
  bool StreamedBlocks() const { return level_capacity_ > 0 && opts_.hop_length <= n_fft_; }
  // Adds x[0 .. n), samples [first, first + n), to the blocks, finishing each block it completes.
  // Returns whether every square was finite (else the caller counts the samples that are not).
  bool MeasureInput(const float *x, int64_t n, int64_t first);
  void ClearBlocks();
  // The rows of the whole steps that frames [first, end), in out's rows, complete
  // (StreamedBlocks).
  void MeasureStreamedFrames(int64_t first, int64_t end, const float *out);
  // At InputFinished, after the last frames: the last step, if it has fewer than k frames
  // (StreamedBlocks).
  void FinishLastStep();
  void DropMeasuredBlocks();  // the blocks of steps done
  // At InputFinished: the last step's block takes the rest of the signal (the blocks after it).
  void MeasureSignalTail();
  // The next row's slot in the ring, the row counted done.
  float *NextRow() {
    float *row = levels_.data() + static_cast<size_t>(level_slot_) * kFrameLevelSize;
    if (++level_slot_ == level_capacity_) level_slot_ = 0;
    ++rows_done_;
    return row;
  }
  float *RowSlot(int64_t g) {
    return levels_.data() + static_cast<size_t>(g % level_capacity_) * kFrameLevelSize;
  }
  int64_t FirstLevelKept() const;  // the first frame kept
  // The rows [*first_row, *end_row) of frames [end_frame - length, end_frame). Throws as
  // WindowLevel does.
  void LevelRows(int64_t end_frame, int64_t length, const char *what, int64_t *first_row,
                 int64_t *end_row) const;
  // Rows [first_row, end_row) as at most two runs in the ring.
  struct RowRuns {
    const float *first, *second;
    int64_t first_rows, second_rows;
  };
  RowRuns Runs(int64_t first_row, int64_t end_row) const;

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

  // Tonal rows (KeepTonal): the peak tracker, the rows not popped yet, a lane's power spectrum.
  void TonalFrame(const float *power);
  std::unique_ptr<TonalPeaks> tonal_;
  std::vector<float> tonal_pending_;
  std::vector<float> lane_power_;

  // Kept levels: row (level step) g in slot g % level_capacity_ of levels_.
  int level_step_ = 1;  // frames per row
  int64_t row_hop_ = 0;  // samples per row: level_step_ * hop_length
  int64_t level_frames_ = 0;  // frames kept, as asked (0: off)
  int64_t level_capacity_ = 0;  // rows in the ring
  int64_t rows_done_ = 0;  // rows measured
  int64_t level_slot_ = 0;  // rows_done_ % level_capacity_, kept without a division per row
  int64_t block_lead_;  // a block starts this many samples before its frame's centre (or start)
  float flux_db_per_unit_ = 1.0f;
  std::vector<float> levels_;
  std::vector<float> prev_mels_;  // the last frame of the last step done: the next step's flux
  std::vector<float> newest_mels_;  // the newest frame (the last step's, if it ends early)
  std::vector<float> rises_;  // MeasureStreamedFrames' scratch: each step's mean rise
  // StreamedBlocks: the block being measured, which ends at block_end_, and the finished blocks'
  // numbers (kSumSquares .. kRealSamples, kBlockValues floats a block; block g is step g's) from
  // blocks_first_ on.
  static constexpr int64_t kBlockValues = kRealSamples + 1;
  int64_t BlocksStored() const { return static_cast<int64_t>(blocks_.size()) / kBlockValues; }
  // Stored block b's numbers (of stored ones) into level[kSumSquares .. kRealSamples]; zeros for
  // a block not stored (after the signal's end).
  void CopyBlock(int64_t b, int64_t stored, float *level) const {
    if (b >= 0 && b < stored) {
      std::memcpy(level, blocks_.data() + b * kBlockValues, kBlockValues * sizeof(float));
    } else {
      std::fill(level, level + kBlockValues, 0.0f);
    }
  }
  BlockMeter meter_;
  int64_t block_end_ = 0;
  int64_t blocks_first_ = 0;  // the block whose numbers start blocks_
  std::vector<float> blocks_;  // finished blocks whose frames are not computed yet

  // Scratch, reused for every frame.
  std::vector<float> clean_, stitched_, windowed_, spec_re_, spec_im_;
  std::vector<simd::V4> windowed4_, spec4_re_, spec4_im_, mels4_;
};

}  // namespace streamtag

#endif  // STREAMTAG_ONLINE_LOG_MEL_H_
