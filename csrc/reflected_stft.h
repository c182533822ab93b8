// Magnitude spectra of short rows of samples, as silero-vad's graph computes them before its
// encoder (streamtag.engine.speech): each row reflected `pad` samples past its end (its last
// sample not repeated), frames of fft_size samples every `hop` under `window`, and the magnitude
// |X[k]| of each frame's real FFT, k in [0, fft_size / 2]. The graph does this as a convolution
// with 258 windowed cosines and sines; one FFT per frame costs a small part of that, and a part
// of numpy's FFT called on every row of a batch.
#ifndef STREAMTAG_REFLECTED_STFT_H_
#define STREAMTAG_REFLECTED_STFT_H_

#include <cstdint>
#include <vector>

#include "fft.h"

namespace streamtag {

class ReflectedStft {
 public:
  // window: fft_size floats. Throws std::invalid_argument unless fft_size >= 2, hop >= 1,
  // 0 <= pad, row_length > pad (reflection reads pad samples before the last) and
  // row_length + pad >= fft_size (at least one frame).
  ReflectedStft(const std::vector<float> &window, int row_length, int hop, int pad);

  int NumBins() const { return fft_.NumBins(); }
  int NumFrames() const { return frames_; }
  int RowLength() const { return row_length_; }

  // rows x row_length samples in; rows x NumBins() x NumFrames() magnitudes out (bins major,
  // as the graph lays its spectrum out).
  void Magnitudes(const float *rows, int64_t n_rows, float *out);

 private:
  std::vector<float> window_;
  int row_length_, hop_, pad_, frames_;
  RealFft fft_;
  std::vector<float> padded_, frame_, re_, im_;
  std::vector<simd::V4> in4_, re4_, im4_, power4_;  // four frames at once (Forward4)
};

}  // namespace streamtag

#endif  // STREAMTAG_REFLECTED_STFT_H_
