// silero-vad's recurrent decoder (streamtag.engine.speech): an LSTM cell of `units`, a ReLU, a
// weighted sum to one logit and a sigmoid, run step by step for many streams at once. The
// input's share of the gates, which does not depend on the state, comes in precomputed for
// every step (one matrix product in numpy); what is left per stream and step is a product of
// the state with a units x 4 units matrix and a few hundred sigmoids and tanhs, which numpy
// spent most of its time calling. The gates are laid out i, f, o, g (the three sigmoids side by
// side).
//
// The work is in eight-lane vectors (GCC/Clang vector extension). On x86-64 the kernel is built
// twice, for AVX2 and for the baseline (SSE2, each eight-lane operation as two), and the loader
// picks the one the CPU runs (target_clones); multiplies and adds are never fused, so both give
// the same floats. Sigmoid and tanh come from an exponential of our own (Cody-Waite reduction
// and a degree-6 polynomial): within 2e-7 of the exact functions, far inside the 1e-4 the
// engine checks the decoder against the graph's own with as it loads.
#ifndef STREAMTAG_LSTM_DECODER_H_
#define STREAMTAG_LSTM_DECODER_H_

#include <cstdint>
#include <vector>

namespace streamtag {

class LstmDecoder {
 public:
  static constexpr int kMaxUnits = 512;

  // recurrent: units x 4 units (row-major: the state's share of the gates i, f, o, g); out:
  // units weights of the ReLU'd state to the logit. Throws std::invalid_argument unless units
  // is a positive multiple of 32 (two panels), at most kMaxUnits, and the sizes agree.
  LstmDecoder(const std::vector<float> &recurrent, const std::vector<float> &out,
              float out_bias, int units);

  int Units() const { return units_; }

  // Runs `steps` steps. Step k is taken by the first counts[k] streams (counts never rising,
  // counts[0] <= streams); their rows are consecutive in `projected` (rows x 4 units, the
  // input's share of the gates with both biases), step after step, and a row whose reset[row]
  // is set starts from a zero state. state: 2 x streams x units (h, then c), moved in place;
  // probs: one speech probability per row. Throws std::invalid_argument where counts do not fit.
  void Run(const float *projected, const int64_t *counts, int64_t steps, const uint8_t *reset,
           float *state, int64_t streams, float *probs) const;

 private:
  int units_;
  // the recurrent weights in panels of two vectors (16 gate columns): panel p holds, for each
  // unit i in turn, its columns 16 p .. 16 p + 15 (floats: a vector's alignment would be lost
  // in a template argument, so the vectors are read unaligned)
  std::vector<float> panels_;
  std::vector<float> out_;
  float out_bias_;
};

// The decoder's exp, sigmoid and tanh of x[0..n) into out (inputs clamped to +-80, where
// sigmoid is 0 or 1 in float); for the tests, which check them against the exact functions.
void ApproximateExp(const float *x, int64_t n, float *out);
void ApproximateSigmoid(const float *x, int64_t n, float *out);
void ApproximateTanh(const float *x, int64_t n, float *out);

}  // namespace streamtag

#endif  // STREAMTAG_LSTM_DECODER_H_
