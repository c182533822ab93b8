// Discrete Fourier transforms of our own: a mixed-radix Stockham autosort complex FFT (radix 4,
// 2, 3 and a generic radix for other primes, so any size gives the exact DFT) and a real-input
// transform on top of it that costs one complex FFT of half the size.
//
// Arrays are split into real and imaginary parts so the inner loops vectorise. An instance owns
// its scratch memory: one instance per thread.
#ifndef STREAMTAG_FFT_H_
#define STREAMTAG_FFT_H_

#include <utility>
#include <vector>

#include "simd.h"

namespace streamtag {

using simd::V4;

class ComplexFft {
 public:
  explicit ComplexFft(int n);  // n >= 1
  int Size() const { return n_; }

  // Forward transform (sign -1, unscaled) of re[0..n), im[0..n), in place.
  void Forward(float *re, float *im);

  // Four transforms at once, one per vector lane; bitwise the same results as Forward. The
  // input is overwritten; the result is where the returned pointers point (the input arrays or
  // this object's scratch, valid until the next call), which saves a copy.
  std::pair<const V4 *, const V4 *> Forward4(V4 *re, V4 *im);

 private:
  struct Stage {
    int radix;
    int length;  // length of the sub-transforms this stage splits
    int stride;
    std::vector<float> tw_re, tw_im;  // (radix - 1) x (length / radix): W_length^(p k)
    std::vector<V4> tw4;  // radix 4: per p, W^p, W^2p, W^3p (re, im), broadcast to all lanes
  };
  void RunStage(const Stage &st, const float *xr, const float *xi, float *yr, float *yi) const;

  int n_;
  std::vector<Stage> stages_;
  std::vector<float> work_re_, work_im_;
  std::vector<V4> work4_re_, work4_im_;
  // W_r^(j k) for the generic radix, keyed by radix (only primes > 3 use it).
  std::vector<std::vector<float>> generic_re_, generic_im_;
};

class RealFft {
 public:
  explicit RealFft(int n);  // n >= 2
  int Size() const { return n_; }
  int NumBins() const { return n_ / 2 + 1; }

  // X[k] for k in [0, n/2], of the real signal in[0..n).
  void Forward(const float *in, float *out_re, float *out_im);

  // Four signals at once, one per vector lane: in[0..n), out[0..n/2]; bitwise as Forward.
  void Forward4(const V4 *in, V4 *out_re, V4 *out_im);

 private:
  int n_;
  bool even_;
  ComplexFft half_;  // size n/2 when n is even, else n
  std::vector<float> z_re_, z_im_;
  std::vector<V4> z4_re_, z4_im_;
  std::vector<float> w_re_, w_im_;  // exp(-2 pi i k / n), k in [0, n/2]
};

}  // namespace streamtag

#endif  // STREAMTAG_FFT_H_
