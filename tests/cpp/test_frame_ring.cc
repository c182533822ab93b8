// frame_ring.h: absolute indices past 2^40, overwrites counted, windows (transposed too) and
// the ranges a window may not take.
#include <cstdint>
#include <stdexcept>
#include <vector>

#include "check.h"
#include "frame_ring.h"

using namespace streamtag;
using namespace streamtag_test;

namespace {

void TestFrameRing() {
  FrameRing ring(5, 2, int64_t{1} << 40);
  std::vector<float> frames(2 * 12);
  for (size_t i = 0; i < frames.size(); ++i) frames[i] = static_cast<float>(i);
  ring.Push(frames.data(), 3);
  ring.Push(frames.data() + 6, 9);
  const int64_t base = int64_t{1} << 40;
  Check(ring.EndIndex() == base + 12 && ring.BeginIndex() == base + 7, "ring indices");
  Check(ring.FramesOverwritten() == 7, "ring overwrites counted");
  std::vector<float> w(2 * 5), wt(2 * 5);
  ring.Window(base + 12, 5, false, w.data());
  ring.Window(base + 12, 5, true, wt.data());
  bool ok = true;
  for (int i = 0; i < 5; ++i) {
    for (int m = 0; m < 2; ++m) {
      ok &= w[i * 2 + m] == frames[(7 + i) * 2 + m] && wt[m * 5 + i] == frames[(7 + i) * 2 + m];
    }
  }
  Check(ok, "ring window contents");
  CheckThrows<std::out_of_range>([&] { ring.Window(base + 12, 6, false, w.data()); },
                                 "window older than the ring");
  CheckThrows<std::out_of_range>([&] { ring.Window(base + 13, 1, false, w.data()); },
                                 "window newer than the ring");
  ring.Push(frames.data(), 12);  // more than the capacity at once
  Check(ring.FramesOverwritten() == 19 && ring.Size() == 5, "bulk push overwrites counted");
}

}  // namespace

int main() {
  TestFrameRing();
  return Summary("test_frame_ring");
}
