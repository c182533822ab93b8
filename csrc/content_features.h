// The content classifier's features of one window of frames (streamtag.engine.content): ten
// numbers from the window's log-mel frames in dB, after Scheirer and Slaney (1997) and the
// broadcast speech/music segmenters. Each stream's window is classified every other second, and
// these are many small reductions over a few thousand values: in numpy, each call's own cost was
// most of the time, so they are computed here in one pass of plain loops (in double precision,
// as the numpy reference in tests/engine/test_content_features.py).
//
// Features, in ContentFeatureNames order (T frames of B bands, x in dB, power p = 10^(x/10),
// a frame's total power E = sum over bands + 1e-12 and level L = 10 log10 E; "loud" frames are
// those within kLoudRangeDb of the window's loudest, and shape features read only those):
//   mod4_share          the level contour's modulation power at 2.5-7 Hz (syllables) over
//                       0.5-15 Hz: |DFT of (L - mean L) under a Hann taper|^2
//   low_energy_share    frames with E below half the window's mean E (pauses between words)
//   flux_mean, flux_cv  the mean over bands of |x[t] - x[t-1]|, its mean and std / (mean + 1e-6)
//   flatness_mean, _std over loud frames, 10^(mean x / 10) / mean p (1 for white noise)
//   peak_persistence    of the spectral peaks (3 dB over the mean of the 5 bands around them,
//                       edges repeated) in loud frames, the share still a peak 8 frames on
//   level_std_db        std of L over loud frames
//   centroid_std        std over loud frames of the power-weighted mean band index
//   pause_share         frames with L under the median L - 15 dB
// Stds are population stds (numpy's default).
#ifndef STREAMTAG_CONTENT_FEATURES_H_
#define STREAMTAG_CONTENT_FEATURES_H_

#include <cstdint>

namespace streamtag {

constexpr int kContentFeatureCount = 10;
constexpr const char *kContentFeatureNames[kContentFeatureCount] = {
    "mod4_share",   "low_energy_share", "flux_mean",       "flux_cv",      "flatness_mean",
    "flatness_std", "peak_persistence", "level_std_db",    "centroid_std", "pause_share"};
constexpr double kLoudRangeDb = 40.0;
constexpr double kPeakRiseDb = 3.0;
constexpr int kPeakPersistFrames = 8;
constexpr double kPauseBelowMedianDb = 15.0;

// The features of frames_db (frames x bands, row-major, dB) at frame_rate frames a second into
// out[0..kContentFeatureCount). Throws std::invalid_argument unless frames >= 2, bands >= 1 and
// frame_rate > 0, or where a value is not finite.
void ContentFeatures(const float *frames_db, int64_t frames, int64_t bands, double frame_rate,
                     double *out);

// The pulse of a longer span of frames (the content tracker's last kPulseSeconds): the onset
// envelope e[t] = the mean over bands of min(max(x[t] - x[t-1], 0), kPulseRiseCapDb) for
// t = 1 .. frames - 1 (a band's rise counted to kPulseRiseCapDb: music entering from silence,
// or a decoder's first silent samples, is one onset, not one that outweighs every beat after
// it), less its mean, and the largest of its autocorrelations r[L] / r[0] at lags of
// kPulseMinSeconds to
// kPulseMaxSeconds (at most half the envelope's length): a beat repeats its onsets at one lag,
// rain, a crowd or traffic at none. 0 where that range holds no lag or the envelope is flat.
// Throws std::invalid_argument unless frames >= 2, bands >= 1, frame_rate > 0 and every value
// is finite.
constexpr double kPulseSeconds = 10.0;
constexpr double kPulseMinSeconds = 0.3;
constexpr double kPulseMaxSeconds = 1.5;
constexpr float kPulseRiseCapDb = 10.0f;
double ContentPulse(const float *frames_db, int64_t frames, int64_t bands, double frame_rate);

}  // namespace streamtag

#endif  // STREAMTAG_CONTENT_FEATURES_H_
