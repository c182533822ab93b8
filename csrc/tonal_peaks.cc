#include "tonal_peaks.h"

#include <algorithm>
#include <cfloat>
#include <cmath>
#include <stdexcept>
#include <string>

namespace streamtag {

TonalPeaks::TonalPeaks(int n_fft, double sample_rate) : bins_(n_fft / 2 + 1) {
  if (n_fft < 8) throw std::invalid_argument("tonal peaks need an FFT of at least 8 points");
  if (!(sample_rate > 0) || !std::isfinite(sample_rate)) {
    throw std::invalid_argument("tonal peaks need a positive sample rate");
  }
  const double per_hz = n_fft / sample_rate;
  const double high = std::min(kTonalHighHz, sample_rate / 2);
  lo_ = std::max(2, static_cast<int>(std::lround(kTonalLowHz * per_hz)));
  hi_ = std::min(bins_ - 2, static_cast<int>(std::lround(high * per_hz)));
  hi_ = std::max(hi_, lo_);  // an empty band at very low rates: no peaks
  peak_.assign(bins_, 0);
  near1_.assign(bins_, 0);
  near2_.assign(bins_, 0);
  sorted_.resize(hi_ - lo_);
  clean_.assign(bins_, 0.0f);
}

void TonalPeaks::Reset() {
  std::fill(near1_.begin(), near1_.end(), 0);
  std::fill(near2_.begin(), near2_.end(), 0);
}

void TonalPeaks::Frame(const float *power, float *row) {
  const int n = hi_ - lo_;
  // the band and two bins each side, an overflowed or undefined power (a hostile signal's)
  // read as the largest float, so that the sort and the sums stay defined
  float *p = clean_.data();
  for (int k = std::max(0, lo_ - 2); k < std::min(bins_, hi_ + 2); ++k) {
    p[k] = power[k] <= FLT_MAX ? power[k] : FLT_MAX;
  }
  double band = 0.0, stable_power = 0.0;
  int peaks = 0, stable = 0;
  std::fill(peak_.begin(), peak_.end(), 0);
  if (n > 0) {
    for (int k = lo_; k < hi_; ++k) band += p[k];
    std::copy(p + lo_, p + hi_, sorted_.begin());
    std::nth_element(sorted_.begin(), sorted_.begin() + n / 2, sorted_.end());
    const double floor = sorted_[n / 2] * std::pow(10.0, kTonalOverMedianDb / 10);
    for (int k = lo_; k < hi_; ++k) {
      const float x = p[k];
      if (x > floor && x > p[k - 1] && x > p[k + 1] && x > p[k - 2] && x > p[k + 2]) {
        peak_[k] = 1;
        ++peaks;
        if (near1_[k] && near2_[k]) {
          ++stable;
          stable_power += x;
        }
      }
    }
  }
  // for the next frame: near2 takes near1, near1 this frame's peaks widened by a bin
  near2_.swap(near1_);
  std::fill(near1_.begin(), near1_.end(), 0);
  for (int k = lo_; k < hi_; ++k) {
    if (peak_[k]) near1_[k - 1] = near1_[k] = near1_[k + 1] = 1;
  }
  row[kBandPower] = static_cast<float>(std::min(band, double{FLT_MAX}));
  row[kPeaks] = static_cast<float>(peaks);
  row[kStablePeaks] = static_cast<float>(stable);
  row[kStablePower] = static_cast<float>(std::min(stable_power, double{FLT_MAX}));
}

void TonalWindowFeatures(const float *rows, int64_t n, double *out) {
  if (n < 1) throw std::invalid_argument("tonal features need at least one frame's row");
  double band = 0, peaks = 0, stable = 0, stable_power = 0;
  for (int64_t t = 0; t < n; ++t) {
    const float *r = rows + t * kTonalRowSize;
    for (int i = 0; i < kTonalRowSize; ++i) {
      if (!std::isfinite(r[i])) {
        throw std::invalid_argument("tonal row " + std::to_string(t) + " holds a value that is "
                                    "not finite");
      }
    }
    band += r[kBandPower];
    peaks += r[kPeaks];
    stable += r[kStablePeaks];
    stable_power += r[kStablePower];
  }
  out[0] = band > 0 ? stable_power / band : 0.0;
  out[1] = stable / double(n);
  out[2] = peaks > 0 ? stable / peaks : 0.0;
}

}  // namespace streamtag
