#include "frame_ring.h"

#include <algorithm>
#include <stdexcept>
#include <string>

namespace streamtag {

FrameRing::FrameRing(int64_t capacity, int num_mels, int64_t first_index)
    : capacity_(capacity), num_mels_(num_mels), first_(first_index), end_(first_index) {
  if (capacity <= 0) {
    throw std::invalid_argument("capacity must be a positive number of frames, got " +
                                std::to_string(capacity));
  }
  if (num_mels <= 0) {
    throw std::invalid_argument("n_mels must be positive, got " + std::to_string(num_mels));
  }
  if (first_index < 0) {
    throw std::invalid_argument("first_index must be >= 0, got " + std::to_string(first_index));
  }
  data_.assign(static_cast<size_t>(capacity) * num_mels, 0.0f);
}

void FrameRing::Reset(int64_t first_index) {
  if (first_index < 0) {
    throw std::invalid_argument("first_index must be >= 0, got " + std::to_string(first_index));
  }
  first_ = end_ = first_index;
  overwritten_ = 0;
}

void FrameRing::Push(const float *frames, int64_t n) {
  if (n < 0) throw std::invalid_argument("frame count must be >= 0");
  // Only the last `capacity` of the new frames can survive; the rest are overwritten at once.
  const int64_t skip = n > capacity_ ? n - capacity_ : 0;
  const int64_t held_before = Size();
  for (int64_t i = skip; i < n; ++i) {
    const int64_t slot = (end_ + i) % capacity_;
    std::copy(frames + i * num_mels_, frames + (i + 1) * num_mels_,
              data_.begin() + slot * num_mels_);
  }
  end_ += n;
  overwritten_ += std::max<int64_t>(0, held_before + n - capacity_);
}

void FrameRing::Window(int64_t end, int64_t length, bool transpose, float *out) const {
  if (length <= 0) {
    throw std::invalid_argument("window length must be positive, got " + std::to_string(length));
  }
  const int64_t begin = end - length;
  if (begin < BeginIndex() || end > end_) {
    throw std::out_of_range("window of frames [" + std::to_string(begin) + ", " +
                            std::to_string(end) + ") is not in the ring, which holds [" +
                            std::to_string(BeginIndex()) + ", " + std::to_string(end_) +
                            ") (capacity " + std::to_string(capacity_) + ")");
  }
  for (int64_t i = 0; i < length; ++i) {
    const float *frame = data_.data() + ((begin + i) % capacity_) * num_mels_;
    if (transpose) {
      for (int m = 0; m < num_mels_; ++m) out[m * length + i] = frame[m];
    } else {
      std::copy(frame, frame + num_mels_, out + i * num_mels_);
    }
  }
}

}  // namespace streamtag
