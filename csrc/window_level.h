// The audio's level and onset rate over a window of frames: an energy meter's numbers and a
// broadcast monitor's silence and clipping signs. OnlineLogMel measures each frame as it
// computes it (kFrameLevelSize floats, layout below) and WindowLevelOf aggregates a window of
// them; the aggregation is a pure function of those floats, so it can be tested alone.
//
// Conventions. Levels are dBFS of the float samples, full scale being |x| = 1:
// rms_dbfs = 10 log10(mean of x^2) and peak_dbfs = 20 log10(max |x|), both floored at
// kSilenceDbfs (digital silence gives exactly -120). A full-scale square wave is 0 dBFS RMS and
// a full-scale sine 0 dBFS peak and -3.01 dBFS RMS (plain mean square, not AES17's +3 dB sine
// reference).
#ifndef STREAMTAG_WINDOW_LEVEL_H_
#define STREAMTAG_WINDOW_LEVEL_H_

#include <cstdint>
#include <string>

namespace streamtag {

// Per-frame features, kFrameLevelSize floats per frame in this order. The counts are whole
// numbers held in floats: exact while a frame owns fewer than 2^24 samples.
enum FrameLevelField : int {
  kSumSquares = 0,  // sum of x^2 over the samples the frame owns (its block)
  kPeak = 1,        // max |x| over the block
  kClipped = 2,     // how many of them have |x| >= kClipLevel
  kRealSamples = 3,  // how many samples the block holds (padding is never counted)
  kOnsetFlux = 4,   // spectral flux of the log-mel frame in dB (see OnlineLogMel), 0 for frame 0
};
constexpr int kFrameLevelSize = 5;
constexpr const char *kFrameLevelNames[kFrameLevelSize] = {"sum_squares", "peak", "clipped",
                                                           "samples", "onset_flux_db"};

// |x| >= 0.999 counts as clipped: a 16-bit full-scale sample decodes to 32767/32768 = 0.99997
// and a limiter's ceiling sits at -0.01 .. -0.1 dBFS (0.989 .. 0.999), so a sample this close to
// full scale is at the converter's rail, not music that happens to be loud.
constexpr float kClipLevel = 0.999f;
constexpr double kSilenceDbfs = -120.0;  // floor of both levels: below 24-bit's noise floor

// Onset picking over a window's flux values (the frames' kOnsetFlux). A frame is an onset when
// its flux is the largest within +-kOnsetNeighbourhoodSeconds (at least one frame either side;
// ties go to the earlier frame), at least mean + kOnsetDelta * (max - mean) of the window's flux,
// at least kOnsetContrast times the window's background flux (the mean of the values at or
// below the window's mean), at least kMinOnsetFluxDb, and at least kOnsetMinGapSeconds after the
// previous onset. Apart from kMinOnsetFluxDb every threshold is relative to the window's own
// flux, so the log form's scale does not matter.
constexpr double kOnsetNeighbourhoodSeconds = 0.030;  // a drum hit's attack: one hit, one peak
constexpr double kOnsetMinGapSeconds = 0.050;  // faster than 20 per second is a roll, not onsets
constexpr double kOnsetDelta = 0.2;  // peaks in the top 80 % of the window's range above its mean
// Steady noise or a noisy tone has local flux maxima all the time, but within 2.5x its
// background; a hit or a note onset stands 5-50x above it.
constexpr double kOnsetContrast = 3.5;
// A rise of 1 dB averaged over all mel bands. Note and drum onsets rise 5-30 dB; a pure tone
// against a -100 dB log floor beats by up to 0.5 dB from frame to frame (997 Hz, dB models), and
// silence or a constant signal gives 0: neither has onsets.
constexpr double kMinOnsetFluxDb = 1.0;

// Levels are kept per level step: as many consecutive frames as fit in kLevelStepSeconds, at
// least one, when frames overlap or touch (hop_length <= n_fft; one frame each otherwise). A
// step's row holds its frames' blocks as one block and the flux from the last frame of the
// step before to its own last frame. So every frontend measures onsets on about the same time
// grid whatever its hop (musicnn's 16-ms frames in steps of two, the default model's 32-ms
// frames one by one), and the level work is done per step, not per frame.
constexpr double kLevelStepSeconds = 0.032;
// Frames per step (at most 2^23 / hop_length: a step owns fewer than 2^23 samples).
int LevelStepFrames(int hop_length, int n_fft, double sample_rate);

struct WindowLevel {
  double rms_dbfs = kSilenceDbfs;
  double peak_dbfs = kSilenceDbfs;
  int64_t clipped = 0;  // samples with |x| >= kClipLevel
  int64_t samples = 0;  // real samples the window's frames own
  int64_t onsets = 0;
  double onset_rate_hz = 0.0;  // onsets / (frames * hop_length / sample_rate)

  // One line, `key=value` pairs.
  std::string ToString() const;
};

// Aggregates n_frames >= 1 rows of features (n_frames x kFrameLevelSize, row-major) into the
// window's level; hop_length is the samples per row (a level step's). The features are trusted
// (OnlineLogMel's, or passed CheckFrameLevels). Throws std::invalid_argument for n_frames < 1,
// hop_length < 1 or a sample rate that is not positive.
WindowLevel WindowLevelOf(const float *features, int64_t n_frames, int hop_length,
                          double sample_rate);
// The same of the rows of `first` (first_rows) followed by those of `second` (second_rows, may
// be 0): a window that wraps around a ring, without copying it. Bitwise WindowLevelOf of the
// rows laid end to end.
WindowLevel WindowLevelOf(const float *first, int64_t first_rows, const float *second,
                          int64_t second_rows, int hop_length, double sample_rate);

// Checks features from outside: every value finite and >= 0, the counts whole numbers below
// 2^24. Throws std::invalid_argument naming the frame and the field.
void CheckFrameLevels(const float *features, int64_t n_frames);

// Measures n >= 0 consecutive samples into level[kSumSquares .. kRealSamples]. The sum of
// squares is float in a fixed layout counted from x[0], so the same samples give bitwise the
// same sum wherever they lie in memory and whichever instruction set runs (SSE, AVX2, NEON):
// x[j] goes to lane j % kBlockLanes while a whole round of lanes is left, the lanes are added in
// a fixed tree, then the rest one by one. The peak is exactly max |x| for 2^-63 <= max |x| <
// 2^64 (it is taken as sqrt(max x^2)).
constexpr int kBlockLanes = 32;
void MeasureBlock(const float *x, int64_t n, float *level);
// MeasureBlock of count consecutive blocks of length samples, block k into
// out[k * stride .. k * stride + kRealSamples]. Returns whether every sum of squares is finite.
bool MeasureBlocks(const float *x, int64_t count, int64_t length, float *out, int stride);

// The mean over n >= 1 values of max(0, current[b] - previous[b]), summed in the same fixed
// layout as MeasureBlock's: the onset flux of a log-mel frame, in the log form's units.
float MeanRise(const float *current, const float *previous, int n);
// MeanRise of count rows of n values (row r at rows + r * stride) each against the row before
// it, row 0 against `before`, into out[0 .. count): bitwise MeanRise's, in one call.
void MeanRiseRows(const float *rows, const float *before, int n, int64_t stride, int64_t count,
                  float *out);

// One frame's features at once: MeasureBlock(x, n, level) and, when previous is not null,
// level[kOnsetFlux] = MeanRise(current, previous, n_mels) * flux_scale (else 0), bitwise the
// same, in one call (OnlineLogMel's per-frame path: the AVX2 kernels reduce their lanes in
// registers instead of through memory).
void MeasureFrameLevel(const float *x, int64_t n, const float *current, const float *previous,
                       int n_mels, float flux_scale, float *level);

// The same with the portable SSE/NEON kernels whatever the CPU has: for tests, which check that
// the wider kernels give bitwise the same numbers.
void MeasureBlockPortable(const float *x, int64_t n, float *level);
float MeanRisePortable(const float *current, const float *previous, int n);
void MeasureFrameLevelPortable(const float *x, int64_t n, const float *current,
                               const float *previous, int n_mels, float flux_scale,
                               float *level);
WindowLevel WindowLevelOfPortable(const float *features, int64_t n_frames, int hop_length,
                                  double sample_rate);

// Measures one block whose samples arrive in pieces (the stream's chunks), bitwise as
// MeasureBlock measures the whole block at once: Add the pieces in order, then Finish. The
// samples of a round not yet complete wait in the meter (at most kBlockLanes - 1), so a round
// is added to the lanes the same way whichever pieces it came in; clipped samples are counted
// in a piece whose peak reaches kClipLevel, while its samples are at hand.
class BlockMeter {
 public:
  BlockMeter() { Clear(); }
  // x[0 .. n) as the block's next samples.
  void Add(const float *x, int64_t n);
  // level[kSumSquares .. kRealSamples] of the samples added since the last Finish (all 0 for
  // none), then empty for the next block. Returns whether its sum of squares is finite (a NaN
  // or infinite sample makes it not, and so does a square above FLT_MAX).
  bool Finish(float *level);
  // Whether the squares added so far sum to a finite number (the lanes and the waiting
  // samples), without finishing the block.
  bool PartFinite() const;
  int64_t Samples() const { return samples_; }

 private:
  void Clear();
  alignas(32) float lanes_[kBlockLanes];
  float waiting_[kBlockLanes];
  int waiting_count_;
  float peak_squared_;
  int64_t clipped_, samples_;
};

// Whether every one of x[0 .. n) is finite (AVX2 where the CPU has it).
bool AllFinite(const float *x, int64_t n);

}  // namespace streamtag

#endif  // STREAMTAG_WINDOW_LEVEL_H_
