// The last `capacity` frames of a stream, addressed by absolute 64-bit frame index. Windows are
// copied out as fresh contiguous arrays. Pushing past the capacity overwrites the oldest frames;
// every overwritten frame is counted.
#ifndef STREAMTAG_FRAME_RING_H_
#define STREAMTAG_FRAME_RING_H_

#include <cstdint>
#include <vector>

namespace streamtag {

class FrameRing {
 public:
  // first_index: the absolute index the first pushed frame gets.
  FrameRing(int64_t capacity, int num_mels, int64_t first_index = 0);

  int64_t Capacity() const { return capacity_; }
  int NumMels() const { return num_mels_; }
  int64_t BeginIndex() const { return end_ - Size(); }  // oldest frame still held
  int64_t EndIndex() const { return end_; }             // one past the newest frame
  int64_t Size() const { return end_ - first_ < capacity_ ? end_ - first_ : capacity_; }
  int64_t FramesOverwritten() const { return overwritten_; }

  // Appends n frames (n x num_mels, row-major).
  void Push(const float *frames, int64_t n);

  // Copies the frames [end - length, end) to out: (length x num_mels) row-major, or
  // (num_mels x length) when transpose is set. Throws std::out_of_range naming what is held.
  void Window(int64_t end, int64_t length, bool transpose, float *out) const;

  void Reset(int64_t first_index = 0);

 private:
  int64_t capacity_;
  int num_mels_;
  int64_t first_;  // absolute index of the first frame ever pushed
  int64_t end_;
  int64_t overwritten_ = 0;
  std::vector<float> data_;  // capacity x num_mels; frame i lives in slot i % capacity
};

}  // namespace streamtag

#endif  // STREAMTAG_FRAME_RING_H_
