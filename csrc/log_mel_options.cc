#include "log_mel_options.h"

#include <cmath>
#include <sstream>
#include <stdexcept>

namespace streamtag {

namespace {

void Require(bool ok, const std::string &message) {
  if (!ok) throw std::invalid_argument(message);
}

}  // namespace

void LogMelOptions::Validate() const {
  Require(std::isfinite(sample_rate) && sample_rate > 0,
          "sample_rate must be a positive number of Hz, got " + std::to_string(sample_rate));
  Require(n_fft >= 2 && n_fft <= (1 << 20),
          "n_fft must be between 2 and 1048576, got " + std::to_string(n_fft));
  Require(win_length >= 0 && win_length <= n_fft,
          "win_length must be between 1 and n_fft (" + std::to_string(n_fft) + "), got " +
              std::to_string(win_length) + "; use 0 for win_length = n_fft");
  Require(hop_length > 0, "hop_length must be a positive number of samples, got " +
                              std::to_string(hop_length));
  Require(window == "hann" || window == "hann_symmetric",
          "window must be 'hann' or 'hann_symmetric', got '" + window + "'");
  Require(pad_mode == "constant" || pad_mode == "reflect",
          "pad_mode must be 'constant' or 'reflect', got '" + pad_mode + "'");
  Require(n_mels > 0, "n_mels must be positive, got " + std::to_string(n_mels));
  const double nyquist = sample_rate / 2.0;
  Require(std::isfinite(fmin) && fmin >= 0, "fmin must be >= 0 Hz, got " + std::to_string(fmin));
  Require(std::isfinite(fmax), "fmax must be a number of Hz (or negative for sample_rate / 2)");
  Require(EffectiveFmax() <= nyquist * (1 + 1e-9),
          "fmax (" + std::to_string(EffectiveFmax()) + " Hz) must not exceed sample_rate / 2 (" +
              std::to_string(nyquist) + " Hz); lower fmax or raise sample_rate");
  Require(fmin < EffectiveFmax(), "fmin (" + std::to_string(fmin) +
                                      " Hz) must be below fmax (" +
                                      std::to_string(EffectiveFmax()) + " Hz)");
  Require(mel_scale == "slaney" || mel_scale == "htk",
          "mel_scale must be 'slaney' or 'htk', got '" + mel_scale + "'");
  Require(norm == "slaney" || norm == "none",
          "norm must be 'slaney' or None, got '" + norm + "'");
  Require(power == 1.0 || power == 2.0,
          "power must be 1 (magnitude) or 2 (power), got " + std::to_string(power));
  Require(log == "db" || log == "log1p" || log == "ln" || log == "none",
          "log must be one of 'db', 'log1p', 'ln', 'none', got '" + log + "'");
  Require(std::isfinite(amin) && amin > 0, "amin must be > 0, got " + std::to_string(amin));
  Require(std::isfinite(db_multiplier) && db_multiplier > 0,
          "db_multiplier must be > 0 (10 for power dB, 20 for the MTG-Jamendo files), got " +
              std::to_string(db_multiplier));
  Require(std::isfinite(log1p_gain) && log1p_gain > 0,
          "log1p_gain must be > 0, got " + std::to_string(log1p_gain));
}

std::string LogMelOptions::ToString() const {
  std::ostringstream os;
  os.precision(17);
  os << "sample_rate=" << sample_rate << " n_fft=" << n_fft << " win_length=" << win_length
     << " hop_length=" << hop_length << " window=" << window
     << " center=" << (center ? "true" : "false") << " pad_mode=" << pad_mode
     << " n_mels=" << n_mels << " fmin=" << fmin << " fmax=" << fmax
     << " mel_scale=" << mel_scale << " norm=" << norm << " power=" << power << " log=" << log
     << " amin=" << amin << " db_multiplier=" << db_multiplier << " log1p_gain=" << log1p_gain
     << " allow_empty_filters=" << (allow_empty_filters ? "true" : "false");
  return os.str();
}

std::vector<std::string> LogMelOptions::PresetNames() {
  return {"mtg_jamendo", "musicnn", "librosa", "cp_jku"};
}

LogMelOptions LogMelOptions::Preset(const std::string &name) {
  LogMelOptions o;
  if (name == "mtg_jamendo") {
    // The recipe of MTG-Jamendo's precomputed mel files (Essentia, default Windowing: a
    // symmetric Hann), 20 * log10 of mel power with a 1e-10 floor.
    o.sample_rate = 12000;
    o.n_fft = 512;
    o.hop_length = 256;
    o.window = "hann_symmetric";
    o.n_mels = 96;
    o.fmin = 0;
    o.fmax = 6000;
    o.db_multiplier = 20;
    o.amin = 1e-10;
  } else if (name == "musicnn") {
    // musicnn: librosa of its time (reflect padding), log10(1 + 10000 x).
    o.sample_rate = 16000;
    o.n_fft = 512;
    o.hop_length = 256;
    o.pad_mode = "reflect";
    o.n_mels = 96;
    o.fmin = 0;
    o.fmax = 8000;
    o.log = "log1p";
    o.log1p_gain = 10000;
  } else if (name == "librosa") {
    o.sample_rate = 22050;
    o.n_fft = 2048;
    o.hop_length = 512;
    o.n_mels = 128;
    o.fmin = 0;
    o.fmax = 11025;
  } else if (name == "cp_jku") {
    o.sample_rate = 44100;
    o.n_fft = 2048;
    o.hop_length = 512;
    o.n_mels = 256;
    o.fmin = 0;
    o.fmax = 22050;
  } else {
    std::string known;
    for (const auto &n : PresetNames()) known += (known.empty() ? "" : ", ") + n;
    throw std::invalid_argument("unknown preset '" + name + "'; known presets: " + known);
  }
  return o;
}

}  // namespace streamtag
