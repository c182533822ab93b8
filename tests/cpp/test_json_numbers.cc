// json_numbers.h: Python's repr of doubles, the rounded arrays of the scores, and float arrays
// read back.
#include <cstring>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <cmath>

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

std::vector<double> Read(const std::string &text, bool *ok) {
  std::vector<double> out;
  const char *end = text.data() + text.size();
  *ok = ReadFloatArray(text.data(), end, out) == end;
  return out;
}

void TestReadFloatArray() {
  bool ok = false;
  const std::vector<double> got = Read("[0.25,-0.0,1e-05,1.5E+16,2.5e3,0.1]", &ok);
  Check(ok && got == std::vector<double>({0.25, -0.0, 1e-05, 1.5e16, 2500.0, 0.1}),
        "floats read back");
  Check(std::signbit(got[1]), "-0.0 keeps its sign");
  // each refused: an integer (Python reads an int), white space, no digits after the point or
  // the exponent, a leading zero or plus, a value past a double's range, empty, unclosed
  for (const char *bad : {"[1]", "[0.5,2]", "[0.5, 0.25]", "[ 0.5]", "[1.]", "[.5]", "[1e]",
                          "[01.5]", "[+1.5]", "[1e400]", "[-1e400]", "[1e-400]", "[]",
                          "[0.5", "[0.5,]", "[NaN]", "[Infinity]", "[0x1p3]", "0.5"}) {
    Read(bad, &ok);
    Check(!ok, std::string("refused: ") + bad);
  }
  std::vector<double> out;
  const std::string two = "[0.5][1.5]";
  Check(ReadFloatArray(two.data(), two.data() + two.size(), out) == two.data() + 5,
        "the end of the first array");
}

void TestTakeFloatArrays() {
  const std::vector<std::string_view> keys = {"raw", "smoothed"};
  std::vector<std::vector<double>> arrays;
  std::string rest;
  const std::string body =
      R"({"active":["a,\"raw\":[9.5]"],"model":{"raw":[7.5]},"raw":[0.5,0.25],)"
      R"("smoothed":[0.75,1.0],"start_s":3.0})";
  Check(TakeFloatArrays(body.data(), body.size(), keys, arrays, rest), "a body's arrays taken");
  Check(arrays[0] == std::vector<double>({0.5, 0.25}) &&
            arrays[1] == std::vector<double>({0.75, 1.0}),
        "the object's own members, not those in a string or a nested object");
  Check(rest == R"({"active":["a,\"raw\":[9.5]"],"model":{"raw":[7.5]},"start_s":3.0})",
        "the rest: " + rest);
  // the object cut short (where a caller stops before a last member) keeps its cut
  Check(TakeFloatArrays(body.data(), body.size() - 15, keys, arrays, rest) &&
            rest == R"({"active":["a,\"raw\":[9.5]"],"model":{"raw":[7.5]})",
        "cut before the end: " + rest);
  for (const char *bad : {
           R"({"raw":[0.5],"smoothed":[0.5]})",               // first
           R"({"a":1,"raw":[0.5]})",                          // one missing
           R"({"a":1,"raw":[0.5],"raw":[0.5],"smoothed":[0.5]})",  // repeated
           R"({"a":1,"raw":[1],"smoothed":[0.5]})",           // an integer
           R"({"a":1,"raw":[0.5]x,"smoothed":[0.5]})",        // no comma or brace after
           R"({"a":1 ,"raw":[0.5],"smoothed":[0.5]})",        // not after a value's end
           R"({,"raw":[0.5],"smoothed":[0.5]})",              // after the opening brace
           R"({"a":{,"raw":[0.5],"smoothed":[0.5]}})",        // nested: not the object's own
           R"([1,"raw":[0.5],"smoothed":[0.5]])",             // not an object
           R"({"a":"\)",                                      // a lone backslash at the end
       }) {
    Check(!TakeFloatArrays(bad, std::strlen(bad), keys, arrays, rest),
          std::string("refused: ") + bad);
  }
}

}  // namespace

int main() {
  TestJsonNumbers();
  TestReadFloatArray();
  TestTakeFloatArrays();
  return Summary("test_json_numbers");
}
