// The pitch of a voice, for telling singing from speech (streamtag.engine.singing): where the
// speech detector hears a voice, its track keeps the fundamental of two frames a detector step
// (YIN: de Cheveigne and Kawahara, "YIN, a fundamental frequency estimator for speech and
// music", JASA 2002), from which a window's share of held notes is read. It runs on every step
// a talking stream's detector calls speech, so it is computed here, the frame's products with
// itself at every lag in four-lane float vectors and the rest in double precision; the numpy
// reference in tests/engine/test_singing.py (float64, products by FFT) picks the same lag.
//
// PitchFrames reads blocks of 16-kHz samples (a detector step after the samples before it),
// halves each to 8 kHz by averaging pairs, and cuts frames of kPitchFrame samples every
// kPitchHop from the block's start. Per frame (PitchFrame), mean removed:
//   d(t)  = sum over j < W - t of (x[j] - x[j + t])^2, for lags t = 1 .. kPitchMaxLag, as the
//           power of x[0 .. W - t) and of x[t .. W) less twice the sum of x[j] x[j + t]
//   d'(t) = d(t) * t / sum_{u <= t} d(u) (1 where that sum is 0: YIN's cumulative mean
//           normalised difference)
//   the period: among lags kPitchMinLag .. kPitchMaxLag, the first with d' under
//   kPitchYinThreshold (else the lowest d'), then on while the next lag's d' is lower (the
//   bottom of that dip), then between lags by the parabola through it and its two neighbours
//   where both are in range and the parabola opens upwards (YIN's step 5).
// Its row: the pitch in semitones above 100 Hz, d' at the period's lag (1 for a frame whose
// mean power is at most kPitchSilentPower: silence or a constant has no pitch), and the mean
// power in dB (10 log10(power + 1e-12)).
#ifndef STREAMTAG_PITCH_TRACK_H_
#define STREAMTAG_PITCH_TRACK_H_

#include <cstdint>

namespace streamtag {

constexpr int kPitchRate = 8000;  // the frames' rate: 16 kHz halved
constexpr int kPitchFrame = 320;  // 40 ms
constexpr int kPitchHop = 256;  // 32 ms
constexpr int kPitchMinLag = kPitchRate / 800;  // 800 Hz, the highest fundamental looked for
constexpr int kPitchMaxLag = kPitchRate / 70;  // 70 Hz, the lowest
constexpr double kPitchYinThreshold = 0.15;
constexpr double kPitchSilentPower = 1e-10;  // -100 dB
constexpr int kPitchRowSize = 3;
enum PitchValue { kPitchSemitones = 0, kPitchDifference = 1, kPitchLevelDb = 2 };

// One frame of kPitchFrame samples at kPitchRate into row (kPitchRowSize floats). Samples must
// be finite (the speech track holds them within +-16).
void PitchFrame(const double *frame, float *row);

// Frames in a block of `length` samples at 16 kHz: (length / 2 - kPitchFrame) / kPitchHop + 1.
// Throws std::invalid_argument for an odd length or one under 2 * kPitchFrame.
int PitchFramesPerBlock(int length);

// The rows of n blocks (n x length, row-major) into rows (n x PitchFramesPerBlock(length) x
// kPitchRowSize). Throws as PitchFramesPerBlock, and for n < 0.
void PitchFrames(const float *blocks, int64_t n, int length, float *rows);

}  // namespace streamtag

#endif  // STREAMTAG_PITCH_TRACK_H_
