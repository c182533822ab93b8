// Triangular mel filters, the same numbers as librosa.filters.mel for the same options (Slaney or
// HTK mel scale; Slaney unit-area normalisation or none). Stored sparse: each filter keeps only
// the span of FFT bins where it is non-zero, so applying it costs about two multiplies per bin.
#ifndef STREAMTAG_MEL_FILTERBANK_H_
#define STREAMTAG_MEL_FILTERBANK_H_

#include <string>
#include <vector>

#include "log_mel_options.h"
#include "simd.h"

namespace streamtag {

double HzToMel(double hz, const std::string &mel_scale);
double MelToHz(double mel, const std::string &mel_scale);

class MelFilterbank {
 public:
  // Throws std::invalid_argument when a filter would be empty (n_mels too large for n_fft).
  explicit MelFilterbank(const LogMelOptions &opts);

  int NumMels() const { return static_cast<int>(begin_.size()); }
  int NumBins() const { return num_bins_; }
  // Apply reads this many spectrum values: NumBins() rounded up to 4, the rest must be 0.
  int PaddedBins() const { return (num_bins_ + 3) / 4 * 4; }

  // out[i] = sum_k W[i, k] spectrum[k].
  void Apply(const float *spectrum, float *out) const;

  // Four spectra at once, one per lane (spectrum[PaddedBins()], out[NumMels()]); each lane's
  // sums are formed in the same order as Apply's, so the results are bitwise the same.
  void Apply4(const simd::V4 *spectrum, simd::V4 *out) const;

  // The dense (n_mels x n_bins) matrix, row-major, for the TorchScript frontend and the tests.
  std::vector<float> Dense() const;

 private:
  int num_bins_;
  // Each filter's non-zero span, widened to whole blocks of 4 bins from begin_ (a multiple of 4)
  // and zero-filled, so the dot products need no scalar remainder.
  std::vector<int> begin_, blocks_;
  std::vector<size_t> offset_;  // where each filter's weights start in weights_
  std::vector<float> weights_;
};

}  // namespace streamtag

#endif  // STREAMTAG_MEL_FILTERBANK_H_
