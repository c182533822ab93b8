// json_numbers.h: Python's repr of doubles, and the rounded arrays of the scores.
#include <stdexcept>
#include <string>
#include <utility>

#include "check.h"
#include "json_numbers.h"

using namespace streamtag;
using namespace streamtag_test;

namespace {

void TestJsonNumbers() {
  // Python's repr of each value (the Python tests compare millions against json.dumps)
  const std::pair<double, const char *> cases[] = {
      {0.0, "0.0"},        {-0.0, "-0.0"},   {1.0, "1.0"},       {0.25, "0.25"},
      {1e-05, "1e-05"},    {1.2e-05, "1.2e-05"}, {0.0001, "0.0001"}, {123.5, "123.5"},
      {1e15, "1000000000000000.0"}, {1e16, "1e+16"}, {-1.5e16, "-1.5e+16"},
      {1e300, "1e+300"},   {5e-324, "5e-324"}, {0.1, "0.1"},     {2.0 / 3.0, "0.6666666666666666"}};
  for (const auto &[x, want] : cases) {
    std::string got;
    AppendFloatRepr(x, got);
    Check(got == want, "repr of " + std::string(want) + ": got " + got);
  }
  const double scores[] = {0.1234565, 2.5e-7, 0.5, 1e303};
  std::string out;
  Check(RoundedJsonArray(scores, 3, 6, out) && out == "[0.123456,0.0,0.5]",
        "rounded array: got " + out);
  Check(!RoundedJsonArray(scores, 4, 6, out), "a value that overflows when rounded");
  CheckThrows<std::invalid_argument>([&] { RoundedJsonArray(scores, 1, 16, out); },
                                     "16 decimals");
}

}  // namespace

int main() {
  TestJsonNumbers();
  return Summary("test_json_numbers");
}
