// Held notes against ambience (streamtag.engine.content): a crowd, rain, traffic, a machine or an
// animal call have spectral peaks that come and go, while a held note is a sinusoid that stays
// within a bin for frames on end. The content frontend's 64 mel bands are too coarse to tell
// them apart, so its power spectra are read here, frame by frame, at the FFT's resolution.
//
// Per frame (TonalPeaks::Frame), in the band kTonalLowHz-kTonalHighHz: a peak is a bin whose
// power is above its two neighbours on each side and more than kTonalOverMedianDb over the
// band's median (the upper median: the middle bin's power after sorting, the higher of the two
// middle ones for an even count); a peak is stable where each of the two frames before held a
// peak within a bin of it (never in the first two frames). The frame's row: the band's power,
// its peaks, its stable peaks and their power (kTonalRowSize floats, TonalValue order).
//
// Per window (TonalWindowFeatures), from its frames' rows: the share of the band's power in
// stable peaks (0 for a band without power), stable peaks per frame, and the share of the peaks
// that are stable (0 without peaks).
#ifndef STREAMTAG_TONAL_PEAKS_H_
#define STREAMTAG_TONAL_PEAKS_H_

#include <cstdint>
#include <vector>

namespace streamtag {

constexpr int kTonalRowSize = 4;
enum TonalValue { kBandPower = 0, kPeaks = 1, kStablePeaks = 2, kStablePower = 3 };
constexpr int kTonalFeatureCount = 3;
constexpr const char *kTonalFeatureNames[kTonalFeatureCount] = {
    "stable_power_share", "stable_peaks", "stable_peak_share"};
constexpr double kTonalLowHz = 100.0;
constexpr double kTonalHighHz = 5000.0;
constexpr double kTonalOverMedianDb = 10.0;

class TonalPeaks {
 public:
  // The band's bins of an n_fft-point FFT at sample_rate: [round(low * n / rate),
  // round(min(high, rate / 2) * n / rate)), kept 2 bins from either end of the spectrum. Throws
  // std::invalid_argument for n_fft < 8 or a rate that is not positive.
  TonalPeaks(int n_fft, double sample_rate);

  int LowBin() const { return lo_; }
  int HighBin() const { return hi_; }
  // One frame's power spectrum (n_fft / 2 + 1 bins), frames in their order, into row. Powers
  // above the largest float, infinite or NaN count as the largest float.
  void Frame(const float *power, float *row);
  // Forgets the frames before: the next frame is a first one.
  void Reset();

 private:
  float UpperMedian(const float *x, int n);  // uses sorted_
  int bins_, lo_, hi_;
  // The last frame's and the one before's peaks (bins), and each widened by a bin as a mask
  std::vector<int> peaks1_, peaks2_, current_;
  std::vector<uint8_t> near1_, near2_;
  std::vector<float> sorted_;  // the median's scratch
  std::vector<float> clean_;  // the frame's powers read, made finite
};

// The window features of rows (n x kTonalRowSize, row-major) into out[0..kTonalFeatureCount).
// Throws std::invalid_argument for n < 1 or a value that is not finite.
void TonalWindowFeatures(const float *rows, int64_t n, double *out);

}  // namespace streamtag

#endif  // STREAMTAG_TONAL_PEAKS_H_
