// SPDX-License-Identifier: Apache-2.0
// usage: check_snippets README.md SNIPPET_FILE...
// Every ```cpp block of the README must be, line for line, a region of one of the snippet files
// (the compiled and run programs of tests/readme/), and every region must appear in the README,
// so that the README's code cannot drift from code that builds and runs. A region lies between
// the lines "// README snippet begin" and "// README snippet end"; it is compared with the
// indentation of its begin line removed.
#include <algorithm>
#include <cstdio>
#include <fstream>
#include <string>
#include <vector>

namespace {

struct Block {
  std::string where; // file:line, for messages
  std::string text;
};

std::vector<std::string> read_lines(const std::string& path) {
  std::ifstream in(path);
  if (!in) {
    std::fprintf(stderr, "check_snippets: cannot read '%s'\n", path.c_str());
    std::exit(2);
  }
  std::vector<std::string> lines;
  for (std::string line; std::getline(in, line);)
    lines.push_back(line);
  return lines;
}

std::vector<Block> readme_blocks(const std::string& path) {
  std::vector<Block> blocks;
  const std::vector<std::string> lines = read_lines(path);
  for (std::size_t i = 0; i < lines.size(); ++i) {
    if (lines[i] != "```cpp")
      continue;
    Block b{path + ":" + std::to_string(i + 1), ""};
    for (++i; i < lines.size() && lines[i] != "```"; ++i)
      b.text += lines[i] + "\n";
    blocks.push_back(b);
  }
  return blocks;
}

std::vector<Block> file_regions(const std::string& path) {
  std::vector<Block> regions;
  const std::vector<std::string> lines = read_lines(path);
  const std::string begin = "// README snippet begin", end = "// README snippet end";
  for (std::size_t i = 0; i < lines.size(); ++i) {
    const std::size_t indent = lines[i].find(begin);
    if (indent == std::string::npos || lines[i].find_first_not_of(' ') != indent)
      continue;
    Block b{path + ":" + std::to_string(i + 1), ""};
    for (++i; i < lines.size() && lines[i].find(end) == std::string::npos; ++i)
      b.text += (lines[i].size() > indent ? lines[i].substr(indent) : std::string()) + "\n";
    regions.push_back(b);
  }
  return regions;
}

} // namespace

int main(int argc, char** argv) {
  if (argc < 3) {
    std::fprintf(stderr, "usage: check_snippets README.md SNIPPET_FILE...\n");
    return 2;
  }
  const std::vector<Block> blocks = readme_blocks(argv[1]);
  std::vector<Block> regions;
  for (int i = 2; i < argc; ++i)
    for (const Block& r : file_regions(argv[i]))
      regions.push_back(r);
  int failures = 0;
  const auto has = [](const std::vector<Block>& in, const Block& b) {
    return std::any_of(in.begin(), in.end(), [&](const Block& o) { return o.text == b.text; });
  };
  for (const Block& b : blocks)
    if (!has(regions, b)) {
      std::printf("FAIL: the README's C++ block at %s is no compiled snippet region:\n%s\n",
                  b.where.c_str(), b.text.c_str());
      ++failures;
    }
  for (const Block& r : regions)
    if (!has(blocks, r)) {
      std::printf("FAIL: the snippet region at %s is not in the README:\n%s\n", r.where.c_str(),
                  r.text.c_str());
      ++failures;
    }
  std::printf("%zu README C++ blocks, %zu snippet regions, %d mismatched\n", blocks.size(),
              regions.size(), failures);
  return failures == 0 ? 0 : 1;
}
