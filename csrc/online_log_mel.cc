#include "online_log_mel.h"

#include <algorithm>
#include <cfloat>
#include <cmath>
#include <cstring>
#include <stdexcept>
#include <string>

#include "simd.h"

namespace streamtag {

namespace {

constexpr double kTwoPi = 6.283185307179586476925286766559;

// Hann window of win_length, zero-padded and centred to n_fft as librosa.util.pad_center does.
std::vector<float> MakeWindow(const LogMelOptions &o) {
  const int win = o.EffectiveWinLength();
  const int denominator = o.window == "hann_symmetric" ? win - 1 : win;
  std::vector<float> w(o.n_fft, 0.0f);
  const int left = (o.n_fft - win) / 2;
  for (int i = 0; i < win; ++i) {
    const double v = denominator > 0 ? 0.5 - 0.5 * std::cos(kTwoPi * i / denominator) : 1.0;
    w[left + i] = static_cast<float>(v);
  }
  return w;
}

}  // namespace

OnlineLogMel::OnlineLogMel(const LogMelOptions &opts)
    : opts_((opts.Validate(), opts)),
      n_fft_(opts.n_fft),
      pad_(opts.center ? opts.n_fft / 2 : 0),
      reflect_(opts.center && opts.pad_mode == "reflect"),
      window_(MakeWindow(opts)),
      mel_(opts),
      fft_(opts.n_fft),
      stitched_(4 * static_cast<size_t>(opts.n_fft)),
      windowed_(opts.n_fft),
      spec_re_(mel_.PaddedBins(), 0.0f),  // the padding stays 0: Apply reads it
      spec_im_(opts.NumBins()),
      windowed4_(opts.n_fft),
      spec4_re_(mel_.PaddedBins(), simd::V4{}),  // the padding stays 0: Apply4 reads it
      spec4_im_(opts.NumBins()),
      mels4_(opts.n_mels) {
  block_lead_ = opts.center ? opts.hop_length / 2 : 0;
  level_step_ = LevelStepFrames(opts.hop_length, opts.n_fft, opts.sample_rate);
  row_hop_ = static_cast<int64_t>(level_step_) * opts.hop_length;
  ClearBlocks();
  // The log as scale * ln(max(floor, gain * x + offset)), decided once.
  magnitude_ = opts.power == 1.0;
  apply_log_ = opts.log != "none";
  log_floor_ = static_cast<float>(opts.amin);
  if (opts.log == "db") {
    log_scale_ = static_cast<float>(opts.db_multiplier / std::log(10.0));
  } else if (opts.log == "log1p") {
    log_scale_ = static_cast<float>(1.0 / std::log(10.0));
    log_gain_ = static_cast<float>(opts.log1p_gain);
    log_offset_ = 1.0f;
    log_floor_ = 1.0f;
  }
  // dB of power per unit of the log form (decades of the mel are 20 / power dB of power).
  const double db_per_decade = 20.0 / opts.power;
  if (opts.log == "db") {
    flux_db_per_unit_ = static_cast<float>(db_per_decade / opts.db_multiplier);
  } else if (opts.log == "log1p") {
    flux_db_per_unit_ = static_cast<float>(db_per_decade);
  } else if (opts.log == "ln") {
    flux_db_per_unit_ = static_cast<float>(db_per_decade / std::log(10.0));
  }
}

void OnlineLogMel::Reset() {
  buffer_.clear();
  buffer_start_ = received_ = next_frame_ = frames_popped_ = nonfinite_ = 0;
  rows_done_ = level_slot_ = 0;
  finished_ = false;
  pending_.clear();
  ClearBlocks();
  if (tonal_) tonal_->Reset();
  tonal_pending_.clear();
}

void OnlineLogMel::KeepTonal(bool on) {
  if (!on) {
    tonal_.reset();
    std::vector<float>().swap(tonal_pending_);
    return;
  }
  if (tonal_) return;
  if (next_frame_ > 0) {
    throw std::runtime_error(
        "keep_tonal: tonal rows must be turned on before the first frame is computed (" +
        std::to_string(next_frame_) + " are), or after reset()");
  }
  tonal_ = std::make_unique<TonalPeaks>(n_fft_, opts_.sample_rate);
  lane_power_.assign(static_cast<size_t>(opts_.NumBins()), 0.0f);
}

int64_t OnlineLogMel::PopTonal(float *out, int64_t max_rows) {
  int64_t n = TonalPending();
  if (max_rows >= 0 && max_rows < n) n = max_rows;
  const auto values = static_cast<std::ptrdiff_t>(n * kTonalRowSize);
  std::copy(tonal_pending_.begin(), tonal_pending_.begin() + values, out);
  tonal_pending_.erase(tonal_pending_.begin(), tonal_pending_.begin() + values);
  return n;
}

void OnlineLogMel::TonalFrame(const float *power) {
  const size_t at = tonal_pending_.size();
  tonal_pending_.resize(at + kTonalRowSize);
  tonal_->Frame(power, tonal_pending_.data() + at);
}

void OnlineLogMel::ClearBlocks() {
  meter_ = BlockMeter();
  blocks_.clear();
  blocks_first_ = 0;
  block_end_ = row_hop_ - block_lead_;
}

void OnlineLogMel::KeepLevels(int64_t frames) {
  if (frames < 0 || frames > kMaxLevelFrames) {
    throw std::invalid_argument("keep_levels: frames must be in [0, " +
                                std::to_string(kMaxLevelFrames) + "], got " +
                                std::to_string(frames));
  }
  if (frames == 0) {
    level_frames_ = level_capacity_ = 0;
    std::vector<float>().swap(levels_);
    std::vector<float>().swap(prev_mels_);
    std::vector<float>().swap(newest_mels_);
    ClearBlocks();
    blocks_.shrink_to_fit();
    return;
  }
  if (level_capacity_ == 0 && next_frame_ > 0) {
    throw std::runtime_error(
        "keep_levels: levels must be turned on before the first frame is computed (" +
        std::to_string(next_frame_) +
        " frames are: the next frame's onset flux needs the one before it); call reset() first");
  }
  // Rows enough for any range of `frames` frames up to the newest (its first and last steps
  // may be cut by it).
  const int64_t rows = (frames + level_step_ - 1) / level_step_ + 2;
  std::vector<float> ring(static_cast<size_t>(rows) * kFrameLevelSize, 0.0f);
  if (level_capacity_ > 0) {  // keep the newest rows that fit
    for (int64_t g = std::max({int64_t{0}, rows_done_ - level_capacity_, rows_done_ - rows});
         g < rows_done_; ++g) {
      const float *from = RowSlot(g);
      std::copy(from, from + kFrameLevelSize,
                ring.data() + static_cast<size_t>(g % rows) * kFrameLevelSize);
    }
  }
  levels_.swap(ring);
  const bool turned_on = level_capacity_ == 0;
  level_frames_ = frames;
  level_capacity_ = rows;
  level_slot_ = rows_done_ % rows;
  prev_mels_.resize(static_cast<size_t>(opts_.n_mels), 0.0f);
  newest_mels_.resize(static_cast<size_t>(opts_.n_mels), 0.0f);
  if (turned_on && StreamedBlocks()) {
    // No frame is computed yet, so the buffer holds every sample so far (from 0): measure them.
    ClearBlocks();
    if (buffer_start_ != 0 || buffer_start_ + static_cast<int64_t>(buffer_.size()) != received_) {
      throw std::logic_error("keep_levels: the buffer does not start at sample 0 (internal error)");
    }
    MeasureInput(buffer_.data(), received_, 0);
  }
}

bool OnlineLogMel::MeasureInput(const float *x, int64_t n, int64_t first) {
  const int64_t hop = row_hop_, end = first + n;
  const int64_t finishing = end < block_end_ ? 0 : 1 + (end - block_end_) / hop;
  size_t at = blocks_.size();
  blocks_.resize(at + static_cast<size_t>(finishing * kBlockValues));
  bool finite = true;
  int64_t i = first;
  if (block_end_ - i < hop || block_end_ > end) {
    // The block under way: begun in an earlier chunk, block 0 (shorter than a hop with
    // center), or one this chunk does not complete.
    const int64_t take = std::min(end, block_end_) - i;
    meter_.Add(x, take);
    i += take;
    if (i < block_end_) return meter_.PartFinite();
    finite = meter_.Finish(blocks_.data() + at);
    at += kBlockValues;
    block_end_ += hop;
  }
  const int64_t whole = (end - i) / hop;  // whole blocks from i, in one call
  if (whole > 0) {
    finite &= MeasureBlocks(x + (i - first), whole, hop, blocks_.data() + at, kBlockValues);
    i += whole * hop;
    block_end_ += whole * hop;
  }
  meter_.Add(x + (i - first), end - i);  // the start of the next block
  return finite && meter_.PartFinite();
}

void OnlineLogMel::DropMeasuredBlocks() {
  const int64_t stored = BlocksStored();
  const int64_t drop = std::min(stored, rows_done_ - blocks_first_);
  if (drop <= 0) return;
  blocks_.erase(blocks_.begin(), blocks_.begin() + drop * kBlockValues);
  blocks_first_ += drop;
}

int64_t OnlineLogMel::FirstLevelKept() const {
  return std::max<int64_t>(0, next_frame_ - level_frames_);
}

void OnlineLogMel::LevelRows(int64_t end_frame, int64_t length, const char *what,
                             int64_t *first_row, int64_t *end_row) const {
  if (level_capacity_ == 0) {
    throw std::runtime_error(std::string(what) +
                             ": levels are not kept; call keep_levels(frames) before the first "
                             "frame to turn them on (they are off by default)");
  }
  if (length < 1) {
    throw std::invalid_argument(std::string(what) + ": length must be >= 1, got " +
                                std::to_string(length));
  }
  const int64_t first = FirstLevelKept();
  const int64_t begin = end_frame - length;
  auto asked = [&] {
    return "frames [" + std::to_string(begin) + ", " + std::to_string(end_frame) + ")";
  };
  if (end_frame > next_frame_ || begin < first) {
    std::string why;
    if (end_frame > next_frame_) {
      why = "frame " + std::to_string(std::max(begin, next_frame_)) + " is not computed yet";
      if (!finished_) why += " (the last frames are after input_finished())";
    } else if (begin < 0) {
      why = "frames start at 0";
    } else {
      why = "frames before " + std::to_string(first) + " are no longer kept (keep_levels(" +
            std::to_string(level_frames_) + ") keeps the last " +
            std::to_string(level_frames_) + " frames)";
    }
    throw std::out_of_range(std::string(what) + ": " + asked() + " asked for, frames [" +
                            std::to_string(first) + ", " + std::to_string(next_frame_) +
                            ") kept: " + why);
  }
  // The steps whose last frame is in the range: step g ends at frame g * k + k - 1, the last
  // step of a finished signal at its last frame.
  const int64_t k = level_step_;
  *first_row = begin / k;
  *end_row = finished_ && end_frame == next_frame_ ? rows_done_ : end_frame / k;
  if (*end_row <= *first_row) {
    throw std::invalid_argument(
        std::string(what) + ": " + asked() + " hold no level step's last frame (levels are kept " +
        "per step of " + std::to_string(k) + " frames, ending at frames " +
        std::to_string(k - 1) + ", " + std::to_string(2 * k - 1) + ", ...); ask for at least " +
        std::to_string(k) + " frames");
  }
}

OnlineLogMel::RowRuns OnlineLogMel::Runs(int64_t first_row, int64_t end_row) const {
  const int64_t slot = first_row % level_capacity_, n = end_row - first_row;
  const float *at = levels_.data() + static_cast<size_t>(slot) * kFrameLevelSize;
  if (slot + n <= level_capacity_) return {at, nullptr, n, 0};
  return {at, levels_.data(), level_capacity_ - slot, n - (level_capacity_ - slot)};
}

int64_t OnlineLogMel::LevelRowCount(int64_t end_frame, int64_t length) const {
  int64_t first_row, end_row;
  LevelRows(end_frame, length, "frame_levels", &first_row, &end_row);
  return end_row - first_row;
}

void OnlineLogMel::FrameLevels(int64_t end_frame, int64_t length, float *out) const {
  int64_t first_row, end_row;
  LevelRows(end_frame, length, "frame_levels", &first_row, &end_row);
  const RowRuns runs = Runs(first_row, end_row);
  out = std::copy(runs.first, runs.first + runs.first_rows * kFrameLevelSize, out);
  if (runs.second_rows > 0) {
    std::copy(runs.second, runs.second + runs.second_rows * kFrameLevelSize, out);
  }
}

streamtag::WindowLevel OnlineLogMel::WindowLevel(int64_t end_frame, int64_t length) const {
  int64_t first_row, end_row;
  LevelRows(end_frame, length, "window_level", &first_row, &end_row);
  const RowRuns runs = Runs(first_row, end_row);
  return WindowLevelOf(runs.first, runs.first_rows, runs.second, runs.second_rows,
                       static_cast<int>(row_hop_), opts_.sample_rate);
}

void OnlineLogMel::MeasureFrame(int64_t t, const float *samples, const float *mels,
                                const float *prev_mels) {
  // Frames are measured in order, one a step (hop > n_fft), so frame t's row is the next.
  float *level = NextRow();
  const float *previous = t == 0 ? nullptr : prev_mels;  // frame 0 rises from nothing
  const int64_t start = FrameStart(t);
  const int64_t begin = std::max({t * opts_.hop_length - block_lead_, start, int64_t{0}});
  const int64_t end = std::min({t * opts_.hop_length - block_lead_ + opts_.hop_length,
                                start + n_fft_, received_});
  if (end > begin) {
    MeasureFrameLevel(samples + (begin - start), end - begin, mels, previous, opts_.n_mels,
                      flux_db_per_unit_, level);
    return;
  }
  std::fill(level, level + kOnsetFlux, 0.0f);
  level[kOnsetFlux] =
      previous == nullptr ? 0.0f : MeanRise(mels, previous, opts_.n_mels) * flux_db_per_unit_;
}

void OnlineLogMel::MeasureSignalTail() {
  if (!StreamedBlocks() || rows_done_ == 0) return;
  // Every block after the last step's: at most hop / 2 samples with center, fewer than n_fft
  // without.
  float *level = RowSlot(rows_done_ - 1);
  for (int64_t k = std::max<int64_t>(0, rows_done_ - blocks_first_) * kBlockValues;
       k < static_cast<int64_t>(blocks_.size()); k += kBlockValues) {
    const float *tail = blocks_.data() + k;
    level[kSumSquares] += tail[kSumSquares];
    level[kPeak] = std::max(level[kPeak], tail[kPeak]);
    level[kClipped] += tail[kClipped];
    level[kRealSamples] += tail[kRealSamples];
  }
}

int64_t OnlineLogMel::NumFramesFor(int64_t num_samples) const {
  if (num_samples <= 0) return 0;
  const int64_t span = num_samples + 2 * pad_ - n_fft_;
  return span < 0 ? 0 : 1 + span / opts_.hop_length;
}

bool OnlineLogMel::FrameCompleteBeforeEnd(int64_t t) const {
  const int64_t start = FrameStart(t);
  if (start + n_fft_ > received_) return false;
  // Reflecting the left edge reads x[1 .. -start]: wait for those samples too.
  return !(reflect_ && start < 0 && -start >= received_);
}

// x[index] of the signal as padding defines it; the sample is in the chunk or in the buffer.
float OnlineLogMel::SampleAt(int64_t index, const float *chunk, int64_t chunk_start) const {
  if (index < 0 || index >= received_) {
    if (!reflect_) return 0.0f;
    // numpy.pad's 'reflect': the signal mirrored about its end samples, repeated as needed.
    const int64_t length = received_;
    if (length == 1) {
      index = 0;
    } else {
      const int64_t period = 2 * (length - 1);
      index %= period;
      if (index < 0) index += period;
      if (index >= length) index = period - index;
    }
  }
  if (index >= chunk_start) return chunk[index - chunk_start];
  if (index < buffer_start_) {
    throw std::logic_error("OnlineLogMel: sample " + std::to_string(index) +
                           " was dropped from the buffer (internal error)");
  }
  return buffer_[static_cast<size_t>(index - buffer_start_)];
}

// Where frame t's n_fft samples are: in the chunk or the buffer when contiguous there, else
// assembled in stitch.
const float *OnlineLogMel::FrameSamples(int64_t t, const float *chunk, int64_t chunk_start,
                                        float *stitch) {
  const int64_t start = FrameStart(t);
  if (start >= chunk_start && start + n_fft_ <= received_) {
    return chunk + (start - chunk_start);  // the common case: no copy
  }
  if (start >= buffer_start_ && start + n_fft_ <= chunk_start) {
    return buffer_.data() + (start - buffer_start_);
  }
  if (start >= buffer_start_ && start + n_fft_ <= received_) {
    // Straddles the buffer and the chunk: two contiguous copies.
    const int64_t from_buffer = chunk_start - start;
    std::copy(buffer_.begin() + (start - buffer_start_), buffer_.end(), stitch);
    std::copy(chunk, chunk + (n_fft_ - from_buffer), stitch + from_buffer);
    return stitch;
  }
  // Reaches into the padding at either end: sample by sample.
  for (int j = 0; j < n_fft_; ++j) stitch[j] = SampleAt(start + j, chunk, chunk_start);
  return stitch;
}

void OnlineLogMel::EmitFrames(const float *chunk, int64_t chunk_start, bool at_end) {
  const int64_t frame_count = at_end ? NumFramesFor(received_) : -1;
  // Readiness is monotone in t, so "frame t + 3 is ready" means four frames are.
  auto ready = [&](int64_t t) { return at_end ? t < frame_count : FrameCompleteBeforeEnd(t); };
  int64_t end = next_frame_;
  while (ready(end)) ++end;
  if (end == next_frame_) return;
  const int n_mels = opts_.n_mels;
  float *dst;
  if (direct_out_ != nullptr) {
    dst = direct_out_ + static_cast<size_t>(next_frame_) * n_mels;
  } else {
    const size_t offset = pending_.size();
    pending_.resize(offset + static_cast<size_t>(end - next_frame_) * n_mels);
    dst = pending_.data() + offset;
  }
  const bool streamed = StreamedBlocks();
  const int64_t first = next_frame_;
  size_t offset = 0;
  while (next_frame_ < end) {
    if (next_frame_ + 4 <= end) {
      const float *samples[4];
      for (int i = 0; i < 4; ++i) {
        samples[i] = FrameSamples(next_frame_ + i, chunk, chunk_start,
                                  stitched_.data() + static_cast<size_t>(i) * n_fft_);
      }
      ComputeFrames4(samples, dst + offset);
      if (level_capacity_ > 0 && !streamed) {
        for (int i = 0; i < 4; ++i) {
          const float *mels = dst + offset + static_cast<size_t>(i) * n_mels;
          MeasureFrame(next_frame_ + i, samples[i], mels,
                       offset + i > 0 ? mels - n_mels : prev_mels_.data());
        }
      }
      next_frame_ += 4;
      offset += 4 * static_cast<size_t>(n_mels);
    } else {
      const float *samples = FrameSamples(next_frame_, chunk, chunk_start, stitched_.data());
      ComputeFrame(samples, dst + offset);
      if (level_capacity_ > 0 && !streamed) {
        MeasureFrame(next_frame_, samples, dst + offset,
                     offset > 0 ? dst + offset - n_mels : prev_mels_.data());
      }
      next_frame_ += 1;
      offset += n_mels;
    }
  }
  if (streamed) {
    MeasureStreamedFrames(first, end, dst);
    // The last step of a finished signal may end on this frame without a whole step.
    if (level_step_ > 1) std::copy(dst + offset - n_mels, dst + offset, newest_mels_.begin());
  } else if (level_capacity_ > 0) {
    std::copy(dst + offset - n_mels, dst + offset, prev_mels_.begin());
  }
}

void OnlineLogMel::MeasureStreamedFrames(int64_t first, int64_t end, const float *out) {
  // The steps whose last frame, g * k + k - 1, is among frames [first, end): their last frames
  // are k rows apart in out, the first of them at or after first (its step was not whole before).
  const int n_mels = opts_.n_mels;
  const int64_t k = level_step_, g_first = rows_done_, count = end / k - g_first;
  if (count <= 0) return;
  if (static_cast<int64_t>(rises_.size()) < count) rises_.resize(static_cast<size_t>(count));
  const float *last = out + static_cast<size_t>(g_first * k + k - 1 - first) * n_mels;
  const int64_t stride = k * n_mels;
  if (g_first == 0) {  // step 0 rises from nothing
    rises_[0] = 0.0f;
    MeanRiseRows(last + stride, last, n_mels, stride, count - 1, rises_.data() + 1);
  } else {
    MeanRiseRows(last, prev_mels_.data(), n_mels, stride, count, rises_.data());
  }
  // Each row: its block's numbers (stored from blocks_first_ on) and its flux, in ring order.
  const int64_t stored = BlocksStored(), b_first = g_first - blocks_first_;
  const float *const rise = rises_.data();
  const float scale = flux_db_per_unit_;
  float *const ring = levels_.data();
  int64_t slot = level_slot_;
  const int64_t capacity = level_capacity_;
  for (int64_t r = 0; r < count; ++r) {
    float *level = ring + slot * kFrameLevelSize;
    if (++slot == capacity) slot = 0;
    CopyBlock(b_first + r, stored, level);
    level[kOnsetFlux] = rise[r] * scale;
  }
  level_slot_ = slot;
  rows_done_ += count;
  const float *newest_end = last + static_cast<size_t>((count - 1) * stride);
  std::copy(newest_end, newest_end + n_mels, prev_mels_.begin());
}

void OnlineLogMel::FinishLastStep() {
  if (!StreamedBlocks() || rows_done_ * level_step_ >= next_frame_) return;
  const int64_t g = rows_done_;
  float *level = NextRow();
  CopyBlock(g - blocks_first_, BlocksStored(), level);
  level[kOnsetFlux] =
      g == 0 ? 0.0f
             : MeanRise(newest_mels_.data(), prev_mels_.data(), opts_.n_mels) * flux_db_per_unit_;
}

void OnlineLogMel::ComputeFrame(const float *samples, float *out) {
  const float *w = window_.data();
  float *xw = windowed_.data();
  for (int j = 0; j < n_fft_; ++j) xw[j] = samples[j] * w[j];
  fft_.Forward(xw, spec_re_.data(), spec_im_.data());
  const int bins = opts_.NumBins();
  float *re = spec_re_.data();
  const float *im = spec_im_.data();
  for (int k = 0; k < bins; ++k) re[k] = re[k] * re[k] + im[k] * im[k];
  if (tonal_) TonalFrame(re);
  if (magnitude_) {
    for (int k = 0; k < bins; ++k) re[k] = std::sqrt(re[k]);
  }
  mel_.Apply(re, out);
  ApplyLog(out);
}

// The log form of one value per lane: scale * ln(max(floor, gain * x + offset)), inputs above
// FLT_MAX (an overflowed power) clamped so the result stays finite. The single-frame and the
// four-frame paths both go through here, lane by lane.
inline simd::V4 OnlineLogMel::LogForm(simd::V4 x) const {
  using simd::Splat;
  const simd::V4 v = Splat(log_gain_) * x + Splat(log_offset_);
  if (__builtin_expect(log_floor_ < FLT_MIN, 0)) {  // the vector log wants normal floats
    simd::V4 r;
    for (int l = 0; l < 4; ++l) {
      r[l] = log_scale_ * std::log(std::min(std::max(log_floor_, v[l]), FLT_MAX));
    }
    return r;
  }
  return Splat(log_scale_) * simd::Log(simd::Min(simd::Max(v, Splat(log_floor_)), Splat(FLT_MAX)));
}

void OnlineLogMel::ApplyLog(float *out) const {
  if (!apply_log_) return;
  const int n = opts_.n_mels;
  int i = 0;
  for (; i + 4 <= n; i += 4) simd::Store(out + i, LogForm(simd::Load(out + i)));
  for (; i < n; ++i) out[i] = LogForm(simd::Splat(out[i]))[0];
}

void OnlineLogMel::ComputeFrames4(const float *const samples[4], float *out) {
  using simd::V4;
  const float *w = window_.data();
  V4 *xw = windowed4_.data();
  int j = 0;
  for (; j + 4 <= n_fft_; j += 4) {  // window, then transpose to one frame per lane
    const V4 wv = simd::Load(w + j);
    V4 a = simd::Load(samples[0] + j) * wv, b = simd::Load(samples[1] + j) * wv;
    V4 c = simd::Load(samples[2] + j) * wv, d = simd::Load(samples[3] + j) * wv;
    simd::Transpose(a, b, c, d);
    xw[j] = a, xw[j + 1] = b, xw[j + 2] = c, xw[j + 3] = d;
  }
  for (; j < n_fft_; ++j) {
    xw[j] = V4{samples[0][j] * w[j], samples[1][j] * w[j], samples[2][j] * w[j],
               samples[3][j] * w[j]};
  }
  fft_.Forward4(xw, spec4_re_.data(), spec4_im_.data());
  const int bins = opts_.NumBins();
  V4 *re = spec4_re_.data();
  const V4 *im = spec4_im_.data();
  for (int k = 0; k < bins; ++k) re[k] = re[k] * re[k] + im[k] * im[k];
  if (tonal_) {  // frame by frame, in their order
    float *lane = lane_power_.data();
    for (int l = 0; l < 4; ++l) {
      for (int k = 0; k < bins; ++k) lane[k] = re[k][l];
      TonalFrame(lane);
    }
  }
  if (magnitude_) {
    for (int k = 0; k < bins; ++k) {
      for (int l = 0; l < 4; ++l) re[k][l] = std::sqrt(re[k][l]);
    }
  }
  V4 *mels = mels4_.data();
  mel_.Apply4(re, mels);
  const int n_mels = opts_.n_mels;
  if (apply_log_) {
    for (int i = 0; i < n_mels; ++i) mels[i] = LogForm(mels[i]);
  }
  int i = 0;
  for (; i + 4 <= n_mels; i += 4) {  // transpose back: lane l is frame l
    V4 a = mels[i], b = mels[i + 1], c = mels[i + 2], d = mels[i + 3];
    simd::Transpose(a, b, c, d);
    simd::Store(out + i, a);
    simd::Store(out + n_mels + i, b);
    simd::Store(out + 2 * n_mels + i, c);
    simd::Store(out + 3 * n_mels + i, d);
  }
  for (; i < n_mels; ++i) {
    for (int l = 0; l < 4; ++l) out[l * n_mels + i] = mels[i][l];
  }
}

// Keeps what later frames can still read: from the next frame's start (from 0 while frames
// reach into the left padding), and always the last pad + 1 samples, which the right
// reflection reads at the end.
void OnlineLogMel::KeepTail(const float *chunk, int64_t chunk_start) {
  int64_t keep_from = std::max<int64_t>(0, FrameStart(next_frame_));
  keep_from = std::max<int64_t>(0, std::min<int64_t>(keep_from, received_ - (pad_ + 1)));
  keep_from = std::max(keep_from, buffer_start_);
  const int64_t buffer_end = buffer_start_ + static_cast<int64_t>(buffer_.size());
  // Drop the buffer's head, then append the part of the chunk that is kept.
  const int64_t drop = std::min<int64_t>(keep_from, buffer_end) - buffer_start_;
  buffer_.erase(buffer_.begin(), buffer_.begin() + drop);
  buffer_start_ += drop;
  const int64_t from = std::max(keep_from, chunk_start);
  if (buffer_.empty()) buffer_start_ = from;
  buffer_.insert(buffer_.end(), chunk + (from - chunk_start), chunk + (received_ - chunk_start));
}

void OnlineLogMel::AcceptWaveform(const float *samples, int64_t n) {
  if (finished_) {
    throw std::runtime_error(
        "accept_waveform called after input_finished(); call reset() to start a new signal");
  }
  if (n < 0) throw std::invalid_argument("sample count must be >= 0");
  if (n == 0) return;
  // With levels measured on the input, one pass measures the chunk and checks it; a chunk
  // with a non-finite sample is measured again, cleaned, from where it started.
  const bool streamed = StreamedBlocks();
  BlockMeter meter_before;
  size_t blocks_before = 0;
  int64_t block_end_before = 0;
  if (streamed) {
    meter_before = meter_;
    blocks_before = blocks_.size();
    block_end_before = block_end_;
  }
  const int64_t chunk_start = received_;
  int64_t bad = 0;
  if (!(streamed ? MeasureInput(samples, n, chunk_start) : AllFinite(samples, n))) {
    for (int64_t i = 0; i < n; ++i) bad += !std::isfinite(samples[i]);
  }
  if (bad > 0) {
    clean_.assign(samples, samples + n);
    for (float &v : clean_) {
      if (!std::isfinite(v)) v = 0.0f;
    }
    samples = clean_.data();
    nonfinite_ += bad;
    if (streamed) {
      meter_ = meter_before;
      blocks_.resize(blocks_before);
      block_end_ = block_end_before;
      MeasureInput(samples, n, chunk_start);
    }
  }
  received_ += n;
  EmitFrames(samples, chunk_start, false);
  if (streamed) DropMeasuredBlocks();
  KeepTail(samples, chunk_start);
}

void OnlineLogMel::InputFinished() {
  if (finished_) return;
  finished_ = true;
  if (StreamedBlocks() && meter_.Samples() > 0) {  // the last block ends with the signal
    const size_t at = blocks_.size();
    blocks_.resize(at + kBlockValues);
    meter_.Finish(blocks_.data() + at);
    block_end_ += row_hop_;
  }
  EmitFrames(nullptr, received_, true);
  FinishLastStep();
  MeasureSignalTail();
  if (StreamedBlocks()) {
    blocks_first_ += BlocksStored();
    blocks_.clear();
  }
  buffer_.clear();
  buffer_start_ = received_;
}

int64_t OnlineLogMel::ComputeAll(const float *samples, int64_t n, float *out) {
  Reset();
  direct_out_ = out;
  try {
    AcceptWaveform(samples, n);
    InputFinished();
  } catch (...) {
    direct_out_ = nullptr;
    throw;
  }
  direct_out_ = nullptr;
  frames_popped_ = next_frame_;
  return next_frame_;
}

int64_t OnlineLogMel::Pop(float *out, int64_t max_frames) {
  int64_t n = FramesPending();
  if (max_frames >= 0) n = std::min(n, max_frames);
  const size_t values = static_cast<size_t>(n) * opts_.n_mels;
  std::copy(pending_.begin(), pending_.begin() + values, out);
  pending_.erase(pending_.begin(), pending_.begin() + values);
  frames_popped_ += n;
  return n;
}

}  // namespace streamtag
