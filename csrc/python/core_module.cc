// The extension module streamtag._core: one binding file per header of the core (bindings.h).
#include "bindings.h"

PYBIND11_MODULE(_core, m) {
  namespace python = streamtag::python;
  m.doc() =
      "streamtag C++ core: FFT, mel filterbank, OnlineLogMel (log-mel frames and, when kept, "
      "per-frame levels and onset flux), WindowLevel (a window's dBFS levels, clipped samples, "
      "onset rate), FrameRing, the content classifier's features, silero-vad's STFT and LSTM "
      "decoder";
  // WindowLevel and LogMelOptions first: OnlineLogMel's signatures name them.
  python::BindWindowLevel(m);
  python::BindLogMelOptions(m);
  python::BindOnlineLogMel(m);
  python::BindMelFilterbank(m);
  python::BindFft(m);
  python::BindJsonNumbers(m);
  python::BindLoudnessMeter(m);
  python::BindFrameRing(m);
  python::BindContentFeatures(m);
  python::BindReflectedStft(m);
  python::BindLstmDecoder(m);
  python::BindTonalPeaks(m);
  python::BindPitchTrack(m);
}
