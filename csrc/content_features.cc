#include "content_features.h"

#include <algorithm>
#include <cmath>
#include <stdexcept>
#include <vector>

namespace streamtag {
namespace {

// Population mean and std of values[i] where keep[i] (all where keep is null).
void MeanStd(const std::vector<double> &values, const std::vector<char> *keep, double *mean,
             double *std_dev) {
  double sum = 0;
  int64_t n = 0;
  for (size_t i = 0; i < values.size(); ++i) {
    if (keep == nullptr || (*keep)[i]) {
      sum += values[i];
      ++n;
    }
  }
  const double m = n ? sum / double(n) : 0.0;
  double dev = 0;
  for (size_t i = 0; i < values.size(); ++i) {
    if (keep == nullptr || (*keep)[i]) dev += (values[i] - m) * (values[i] - m);
  }
  *mean = m;
  *std_dev = n ? std::sqrt(dev / double(n)) : 0.0;
}

}  // namespace

void ContentFeatures(const float *frames_db, int64_t frames, int64_t bands, double frame_rate,
                     double *out) {
  if (frames < 2 || bands < 1) {
    throw std::invalid_argument("content features need at least 2 frames of at least 1 band");
  }
  if (!(frame_rate > 0) || !std::isfinite(frame_rate)) {
    throw std::invalid_argument("frame_rate must be a positive number of frames a second");
  }
  const int64_t T = frames, B = bands;
  std::vector<double> power(size_t(T * B));
  std::vector<double> total(T), level(T), flat(T), centroid(T);
  const double ln10_10 = std::log(10.0) / 10.0;
  const float ln10_10f = float(ln10_10);
  for (int64_t t = 0; t < T; ++t) {
    const float *x = frames_db + t * B;
    double *p = power.data() + t * B;
    double sum = 0, sum_db = 0, weighted = 0;
    for (int64_t b = 0; b < B; ++b) {
      const double v = x[b];
      if (!std::isfinite(v)) throw std::invalid_argument("content frames must be finite dB");
      p[b] = double(std::exp(x[b] * ln10_10f));  // float: most of the time is here
      sum += p[b];
      sum_db += v;
      weighted += p[b] * double(b);
    }
    total[t] = sum + 1e-12;
    level[t] = 10.0 * std::log10(total[t]);
    flat[t] = std::exp(sum_db / double(B) * ln10_10) / (sum / double(B));
    centroid[t] = weighted / total[t];
  }
  const double loudest = *std::max_element(level.begin(), level.end());
  std::vector<char> loud(T);
  for (int64_t t = 0; t < T; ++t) loud[t] = level[t] > loudest - kLoudRangeDb;

  // modulation: the DFT of the tapered level contour at the bins between 0.5 and 15 Hz
  double level_mean, level_std_all;
  MeanStd(level, nullptr, &level_mean, &level_std_all);
  std::vector<double> contour(T);
  for (int64_t n = 0; n < T; ++n) {
    const double taper = T > 1 ? 0.5 - 0.5 * std::cos(2.0 * M_PI * double(n) / double(T - 1))
                               : 1.0;
    contour[n] = (level[n] - level_mean) * taper;
  }
  std::vector<double> cos_table(T), sin_table(T);
  for (int64_t n = 0; n < T; ++n) {
    cos_table[n] = std::cos(2.0 * M_PI * double(n) / double(T));
    sin_table[n] = std::sin(2.0 * M_PI * double(n) / double(T));
  }
  const double bin_hz = 1.0 / (double(T) * (1.0 / frame_rate));  // numpy's rfftfreq
  double band = 0, whole = 0;
  for (int64_t k = 0; k <= T / 2; ++k) {
    const double f = double(k) * bin_hz;
    if (f < 0.5 || f > 15.0) continue;
    double re = 0, im = 0;
    int64_t at = 0;  // k n mod T
    for (int64_t n = 0; n < T; ++n) {
      re += contour[n] * cos_table[at];
      im -= contour[n] * sin_table[at];
      at += k;
      if (at >= T) at -= T;
    }
    const double s = re * re + im * im;
    whole += s;
    if (f >= 2.5 && f <= 7.0) band += s;
  }
  out[0] = band / (whole + 1e-12);

  // low-energy frames, and pauses under the median level
  double total_mean = 0;
  for (double e : total) total_mean += e;
  total_mean /= double(T);
  int64_t low = 0;
  for (double e : total) low += e < 0.5 * total_mean;
  out[1] = double(low) / double(T);
  std::vector<double> sorted(level);
  const size_t mid = sorted.size() / 2;
  std::nth_element(sorted.begin(), sorted.begin() + mid, sorted.end());
  double median = sorted[mid];
  if (sorted.size() % 2 == 0) {
    median = (median + *std::max_element(sorted.begin(), sorted.begin() + mid)) / 2.0;
  }
  int64_t pauses = 0;
  for (double l : level) pauses += l < median - kPauseBelowMedianDb;
  out[9] = double(pauses) / double(T);

  // spectral flux
  std::vector<double> flux(T - 1);
  for (int64_t t = 1; t < T; ++t) {
    const float *a = frames_db + (t - 1) * B, *b = frames_db + t * B;
    double sum = 0;
    for (int64_t j = 0; j < B; ++j) sum += std::fabs(double(b[j]) - double(a[j]));
    flux[t - 1] = sum / double(B);
  }
  double flux_mean, flux_std;
  MeanStd(flux, nullptr, &flux_mean, &flux_std);
  out[2] = flux_mean;
  out[3] = flux_std / (flux_mean + 1e-6);
  MeanStd(flat, &loud, &out[4], &out[5]);

  // spectral peaks of loud frames, and how many are still there kPeakPersistFrames on
  std::vector<char> peaks(size_t(T * B), 0);
  for (int64_t t = 0; t < T; ++t) {
    if (!loud[t]) continue;
    const float *x = frames_db + t * B;
    for (int64_t b = 0; b < B; ++b) {
      double around = 0;
      for (int64_t j = b - 2; j <= b + 2; ++j) around += x[std::clamp<int64_t>(j, 0, B - 1)];
      peaks[t * B + b] = double(x[b]) - around * 0.2 > kPeakRiseDb;
    }
  }
  int64_t counted = 0, kept = 0;
  for (int64_t t = 0; t + kPeakPersistFrames < T; ++t) {
    for (int64_t b = 0; b < B; ++b) {
      if (peaks[t * B + b]) {
        ++counted;
        kept += peaks[(t + kPeakPersistFrames) * B + b];
      }
    }
  }
  out[6] = counted ? double(kept) / double(counted) : 0.0;
  double unused;
  MeanStd(level, &loud, &unused, &out[7]);
  MeanStd(centroid, &loud, &unused, &out[8]);
}

double ContentPulse(const float *frames_db, int64_t frames, int64_t bands, double frame_rate) {
  if (frames < 2 || bands < 1) {
    throw std::invalid_argument("the pulse needs at least 2 frames of at least 1 band");
  }
  if (!(frame_rate > 0) || !std::isfinite(frame_rate)) {
    throw std::invalid_argument("frame_rate must be a positive number of frames a second");
  }
  // every value finite: their sum is (in double, dB values cannot overflow it), and a NaN or an
  // infinity anywhere makes it not; one check, so the loops below vectorise
  double total = 0;
  for (int64_t i = 0; i < frames * bands; ++i) total += double(frames_db[i]);
  if (!std::isfinite(total)) throw std::invalid_argument("content frames must be finite dB");
  const int64_t n = frames - 1;
  std::vector<double> e(size_t(n), 0.0);
  double mean = 0;
  for (int64_t t = 0; t < n; ++t) {
    const float *before = frames_db + t * bands, *x = before + bands;
    float rise = 0;
    for (int64_t b = 0; b < bands; ++b) {
      const float d = x[b] - before[b];
      rise += d > 0 ? (d < kPulseRiseCapDb ? d : kPulseRiseCapDb) : 0.0f;
    }
    e[t] = double(rise) / double(bands);
    mean += e[t];
  }
  mean /= double(n);
  for (double &v : e) v -= mean;
  const int64_t lo = std::llround(kPulseMinSeconds * frame_rate);
  const int64_t hi = std::min<int64_t>(std::llround(kPulseMaxSeconds * frame_rate), n / 2);
  double r0 = 0;
  for (double v : e) r0 += v * v;
  if (hi < lo || !(r0 > 0)) return 0.0;
  double best = -1.0;
  for (int64_t lag = lo; lag <= hi; ++lag) {
    double r = 0;
    for (int64_t t = 0; t + lag < n; ++t) r += e[t] * e[t + lag];
    best = std::max(best, r / r0);
  }
  return best;
}

}  // namespace streamtag
