// Options of the log-mel frontend. These numbers are a contract: a model file carries them, and
// the daemon and the trainer build their frontends from them, so training and serving agree.
#ifndef STREAMTAG_LOG_MEL_OPTIONS_H_
#define STREAMTAG_LOG_MEL_OPTIONS_H_

#include <string>
#include <vector>

namespace streamtag {

struct LogMelOptions {
  double sample_rate = 16000.0;
  int n_fft = 512;
  int win_length = 0;  // 0 means n_fft; a shorter window is zero-padded to n_fft, centred
  int hop_length = 256;
  std::string window = "hann";  // "hann" (periodic, as librosa) or "hann_symmetric"
  bool center = true;           // frame t is centred on sample t * hop_length
  std::string pad_mode = "constant";  // "constant" (zeros) or "reflect"; used when center
  int n_mels = 96;
  double fmin = 0.0;
  double fmax = -1.0;  // < 0 means sample_rate / 2
  std::string mel_scale = "slaney";  // "slaney" or "htk"
  std::string norm = "slaney";       // "slaney" (unit area) or "none"
  double power = 2.0;                // 1 (magnitude) or 2 (power)
  std::string log = "db";  // "db": m * log10(max(amin, x)); "log1p": log10(1 + g * x);
                           // "ln": ln(max(amin, x)); "none"
  double amin = 1e-10;
  double db_multiplier = 10.0;  // 10: librosa power_to_db(ref=1, top_db=None); 20: MTG-Jamendo
  double log1p_gain = 10000.0;  // musicnn's log10(1 + 10000 x)
  // A mel filter that covers no FFT bin (too many mels for the FFT's resolution) is an error,
  // unless allowed: it then gives 0, as librosa (with a warning) and torchaudio do.
  bool allow_empty_filters = false;

  // Throws std::invalid_argument naming the offending option and the valid range.
  void Validate() const;

  int EffectiveWinLength() const { return win_length > 0 ? win_length : n_fft; }
  double EffectiveFmax() const { return fmax < 0 ? sample_rate / 2.0 : fmax; }
  int NumBins() const { return n_fft / 2 + 1; }

  // One line, `key=value` pairs, for error messages and logs.
  std::string ToString() const;

  // Named presets: "mtg_jamendo", "musicnn", "librosa", "cp_jku".
  static LogMelOptions Preset(const std::string &name);
  static std::vector<std::string> PresetNames();
};

}  // namespace streamtag

#endif  // STREAMTAG_LOG_MEL_OPTIONS_H_
