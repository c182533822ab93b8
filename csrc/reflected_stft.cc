#include "reflected_stft.h"

#include <cmath>
#include <stdexcept>
#include <string>

namespace streamtag {

ReflectedStft::ReflectedStft(const std::vector<float> &window, int row_length, int hop, int pad)
    : window_(window),
      row_length_(row_length),
      hop_(hop),
      pad_(pad),
      frames_(0),
      fft_(window.size() >= 2 ? int(window.size()) : 2) {
  const int n = int(window.size());
  if (n < 2 || hop < 1 || pad < 0 || row_length <= pad || row_length + pad < n) {
    throw std::invalid_argument(
        "a reflected STFT needs a window of at least 2 samples, hop >= 1, 0 <= pad < "
        "row_length and row_length + pad >= the window's length; got window " +
        std::to_string(n) + ", row_length " + std::to_string(row_length) + ", hop " +
        std::to_string(hop) + ", pad " + std::to_string(pad));
  }
  frames_ = (row_length + pad - n) / hop + 1;
  padded_.resize(size_t(row_length + pad));
  frame_.resize(size_t(n));
  re_.resize(size_t(fft_.NumBins()));
  im_.resize(size_t(fft_.NumBins()));
  in4_.resize(size_t(n));
  re4_.resize(size_t(fft_.NumBins()));
  im4_.resize(size_t(fft_.NumBins()));
  power4_.resize(size_t(fft_.NumBins()));
}

void ReflectedStft::Magnitudes(const float *rows, int64_t n_rows, float *out) {
  const int n = int(window_.size()), bins = fft_.NumBins();
  for (int64_t r = 0; r < n_rows; ++r) {
    const float *row = rows + r * row_length_;
    std::copy(row, row + row_length_, padded_.begin());
    for (int j = 0; j < pad_; ++j) padded_[row_length_ + j] = row[row_length_ - 2 - j];
    float *spectrum = out + r * int64_t(bins) * frames_;
    int f = 0;
    for (; f + 4 <= frames_; f += 4) {  // four frames at once, one per lane
      const float *start = padded_.data() + f * hop_;
      for (int j = 0; j < n; ++j) {
        in4_[j] = simd::V4{start[j], start[hop_ + j], start[2 * hop_ + j],
                           start[3 * hop_ + j]} * simd::Splat(window_[j]);
      }
      fft_.Forward4(in4_.data(), re4_.data(), im4_.data());
      for (int k = 0; k < bins; ++k) power4_[k] = re4_[k] * re4_[k] + im4_[k] * im4_[k];
      const float *power = reinterpret_cast<const float *>(power4_.data());
      for (int k = 0; k < bins; ++k) {
        float *to = spectrum + int64_t(k) * frames_ + f;
        for (int lane = 0; lane < 4; ++lane) to[lane] = std::sqrt(power[4 * k + lane]);
      }
    }
    for (; f < frames_; ++f) {
      const float *start = padded_.data() + f * hop_;
      for (int j = 0; j < n; ++j) frame_[j] = start[j] * window_[j];
      fft_.Forward(frame_.data(), re_.data(), im_.data());
      for (int k = 0; k < bins; ++k) {
        spectrum[int64_t(k) * frames_ + f] = std::sqrt(re_[k] * re_[k] + im_[k] * im_[k]);
      }
    }
  }
}

}  // namespace streamtag
