#include "mel_filterbank.h"

#include <algorithm>
#include <cmath>
#include <stdexcept>

#include "simd.h"

namespace streamtag {

namespace {

// Slaney's Auditory Toolbox scale: linear below 1 kHz, logarithmic above.
constexpr double kSlaneyHzPerMel = 200.0 / 3.0;
constexpr double kSlaneyMinLogHz = 1000.0;
constexpr double kSlaneyMinLogMel = kSlaneyMinLogHz / kSlaneyHzPerMel;  // 15

double SlaneyLogStep() { return std::log(6.4) / 27.0; }

}  // namespace

double HzToMel(double hz, const std::string &mel_scale) {
  if (mel_scale == "htk") return 2595.0 * std::log10(1.0 + hz / 700.0);
  if (hz >= kSlaneyMinLogHz) {
    return kSlaneyMinLogMel + std::log(hz / kSlaneyMinLogHz) / SlaneyLogStep();
  }
  return hz / kSlaneyHzPerMel;
}

double MelToHz(double mel, const std::string &mel_scale) {
  if (mel_scale == "htk") return 700.0 * (std::pow(10.0, mel / 2595.0) - 1.0);
  if (mel >= kSlaneyMinLogMel) {
    return kSlaneyMinLogHz * std::exp(SlaneyLogStep() * (mel - kSlaneyMinLogMel));
  }
  return kSlaneyHzPerMel * mel;
}

MelFilterbank::MelFilterbank(const LogMelOptions &opts) : num_bins_(opts.NumBins()) {
  opts.Validate();
  const int n_mels = opts.n_mels;
  // Band edges: n_mels + 2 points evenly spaced on the mel scale, as librosa.mel_frequencies.
  const double mel_lo = HzToMel(opts.fmin, opts.mel_scale);
  const double mel_hi = HzToMel(opts.EffectiveFmax(), opts.mel_scale);
  // Rounded as numpy.linspace and numpy.fft.rfftfreq round, so the filters agree to the last bit.
  const double mel_step = (mel_hi - mel_lo) / (n_mels + 1);
  std::vector<double> edges(n_mels + 2);
  for (int i = 0; i < n_mels + 2; ++i) {
    const double mel = i == n_mels + 1 ? mel_hi : i * mel_step + mel_lo;
    edges[i] = MelToHz(mel, opts.mel_scale);
  }
  const double hz_per_bin = 1.0 / (opts.n_fft * (1.0 / opts.sample_rate));
  std::vector<double> bin_hz(num_bins_);
  for (int k = 0; k < num_bins_; ++k) bin_hz[k] = k * hz_per_bin;

  begin_.resize(n_mels);
  blocks_.resize(n_mels);
  offset_.resize(n_mels);
  std::vector<float> row(num_bins_, 0.0f);
  const bool slaney_norm = opts.norm == "slaney";
  for (int i = 0; i < n_mels; ++i) {
    const double lower_width = edges[i + 1] - edges[i];
    const double upper_width = edges[i + 2] - edges[i + 1];
    // librosa stores each row as float32 first, then scales by the (float64) Slaney norm.
    const double enorm = slaney_norm ? 2.0 / (edges[i + 2] - edges[i]) : 1.0;
    // A filter is 0 outside (edges[i], edges[i + 2]): only the bins in that span, widened by one
    // on each side, are computed (the same expression as for every bin, so the same numbers);
    // the rest of row stays 0. Going through all n_mels x bins cost 0.6 ms per stream start.
    const int lo = std::clamp(static_cast<int>(std::floor(edges[i] / hz_per_bin)) - 1, 0,
                              num_bins_);
    const int hi = std::clamp(static_cast<int>(std::ceil(edges[i + 2] / hz_per_bin)) + 2, lo,
                              num_bins_);
    int first = num_bins_, last = -1;
    for (int k = lo; k < hi; ++k) {
      const double rising = (bin_hz[k] - edges[i]) / lower_width;
      const double falling = (edges[i + 2] - bin_hz[k]) / upper_width;
      const double w = std::max(0.0, std::min(rising, falling));
      float wf = static_cast<float>(w);
      if (slaney_norm) wf = static_cast<float>(static_cast<double>(wf) * enorm);
      row[k] = wf;
      if (wf > 0.0f) {
        first = std::min(first, k);
        last = k;
      }
    }
    if (last < 0) {
      if (!opts.allow_empty_filters) {
        throw std::invalid_argument(
            "mel filter " + std::to_string(i) + " of n_mels=" + std::to_string(n_mels) +
            " covers no FFT bin (bins are " + std::to_string(opts.sample_rate / opts.n_fft) +
            " Hz apart); lower n_mels or raise n_fft, or set allow_empty_filters to keep it as "
            "a band of zeros (as librosa and torchaudio do)");
      }
      first = last = 0;  // one block of zero weights: the band is always 0
    }
    begin_[i] = first / 4 * 4;
    blocks_[i] = (last + 1 - begin_[i] + 3) / 4;
    offset_[i] = weights_.size();
    for (int k = begin_[i]; k < begin_[i] + 4 * blocks_[i]; ++k) {
      weights_.push_back(k < num_bins_ ? row[k] : 0.0f);
    }
    std::fill(row.begin() + lo, row.begin() + hi, 0.0f);  // row is all 0 for the next filter
  }
}

void MelFilterbank::Apply(const float *spectrum, float *out) const {
  const int n_mels = NumMels();
  for (int i = 0; i < n_mels; ++i) {
    const float *w = weights_.data() + offset_[i];
    const float *x = spectrum + begin_[i];
    simd::V4 acc = simd::Load(w) * simd::Load(x);
    for (int b = 1; b < blocks_[i]; ++b) acc += simd::Load(w + 4 * b) * simd::Load(x + 4 * b);
    out[i] = (acc[0] + acc[2]) + (acc[1] + acc[3]);
  }
}

void MelFilterbank::Apply4(const simd::V4 *spectrum, simd::V4 *out) const {
  const int n_mels = NumMels();
  for (int i = 0; i < n_mels; ++i) {
    const float *w = weights_.data() + offset_[i];
    const simd::V4 *x = spectrum + begin_[i];
    simd::V4 a0 = w[0] * x[0], a1 = w[1] * x[1], a2 = w[2] * x[2], a3 = w[3] * x[3];
    for (int b = 1; b < blocks_[i]; ++b) {
      a0 += w[4 * b] * x[4 * b];
      a1 += w[4 * b + 1] * x[4 * b + 1];
      a2 += w[4 * b + 2] * x[4 * b + 2];
      a3 += w[4 * b + 3] * x[4 * b + 3];
    }
    out[i] = (a0 + a2) + (a1 + a3);
  }
}

std::vector<float> MelFilterbank::Dense() const {
  std::vector<float> dense(static_cast<size_t>(NumMels()) * num_bins_, 0.0f);
  for (int i = 0; i < NumMels(); ++i) {
    for (int j = 0; j < 4 * blocks_[i] && begin_[i] + j < num_bins_; ++j) {
      dense[static_cast<size_t>(i) * num_bins_ + begin_[i] + j] = weights_[offset_[i] + j];
    }
  }
  return dense;
}

}  // namespace streamtag
