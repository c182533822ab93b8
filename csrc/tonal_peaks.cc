#include "tonal_peaks.h"

#include <algorithm>
#include <cfloat>
#include <cstring>
#include <cmath>
#include <stdexcept>
#include <string>

namespace streamtag {
namespace {
const double kOverMedian = std::pow(10.0, kTonalOverMedianDb / 10);  // the power ratio
}  // namespace

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
  peaks1_.reserve(hi_ - lo_);
  peaks2_.reserve(hi_ - lo_);
  current_.reserve(hi_ - lo_);
  near1_.assign(bins_, 0);
  near2_.assign(bins_, 0);
  sorted_.resize(hi_ - lo_);
  clean_.assign(bins_, 0.0f);
}

// The upper median of x[0 .. n) (finite, not negative): the binade that holds it from a count of
// each binade's values (a non-negative float's bits order as its value, its exponent on top),
// then the rank within that binade's values alone; exactly nth_element's answer, without its
// unpredictable branches over every value.
float TonalPeaks::UpperMedian(const float *x, int n) {
  uint32_t counts[256] = {};
  for (int i = 0; i < n; ++i) {
    uint32_t bits;
    std::memcpy(&bits, x + i, sizeof bits);
    ++counts[bits >> 23];
  }
  int rank = n / 2, binade = 0;
  while (rank >= static_cast<int>(counts[binade])) rank -= static_cast<int>(counts[binade++]);
  int m = 0;
  for (int i = 0; i < n; ++i) {
    uint32_t bits;
    std::memcpy(&bits, x + i, sizeof bits);
    if ((bits >> 23) == static_cast<uint32_t>(binade)) sorted_[m++] = x[i];
  }
  std::nth_element(sorted_.begin(), sorted_.begin() + rank, sorted_.begin() + m);
  return sorted_[rank];
}

void TonalPeaks::Reset() {
  std::fill(near1_.begin(), near1_.end(), 0);
  std::fill(near2_.begin(), near2_.end(), 0);
  peaks1_.clear();
  peaks2_.clear();
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
  int stable = 0;
  std::vector<int> &mine = current_;
  mine.clear();
  if (n > 0) {
    double part[4] = {0, 0, 0, 0};  // four sums: no chain of dependent additions
    int k = lo_;
    for (; k + 4 <= hi_; k += 4) {
      for (int j = 0; j < 4; ++j) part[j] += p[k + j];
    }
    for (; k < hi_; ++k) part[0] += p[k];
    band = (part[0] + part[1]) + (part[2] + part[3]);
    const double floor = UpperMedian(p + lo_, n) * kOverMedian;
    for (k = lo_; k < hi_; ++k) {
      const float x = p[k];
      if (x > floor && x > p[k - 1] && x > p[k + 1] && x > p[k - 2] && x > p[k + 2]) {
        mine.push_back(k);
        if (near1_[k] && near2_[k]) {
          ++stable;
          stable_power += x;
        }
      }
    }
  }
  // for the next frame: near2 (cleared where the frame before last set it) takes this frame's
  // peaks widened and becomes near1, near1 becomes near2
  for (int k : peaks2_) near2_[k - 1] = near2_[k] = near2_[k + 1] = 0;
  for (int k : mine) near2_[k - 1] = near2_[k] = near2_[k + 1] = 1;
  near1_.swap(near2_);
  peaks2_.swap(peaks1_);
  peaks1_.swap(current_);
  row[kBandPower] = static_cast<float>(std::min(band, double{FLT_MAX}));
  row[kPeaks] = static_cast<float>(peaks1_.size());
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
