// Presage under the bench's typist: a line protocol on stdin/stdout over libpresage's C++ API.
//
// Build: g++ -O2 presage_driver.cc -o presage-driver -lpresage   (Debian: libpresage-dev)
// Run:   presage-driver CONFIG.xml SUGGESTIONS
//
// The driver holds the text typed so far and hands it to Presage as the past stream, as a
// text box would; Presage's context tracker sees each change on the next predict() and,
// with ONLINE_LEARNING on, its user n-gram model learns from it.
//   "t N\n" + N bytes  the user typed these bytes (UTF-8); no reply
//   "s\n"              reply "K\n" + K lines: completion(word) of each predict() word,
//                      control characters (abbreviation erasers) shown as '?'
//   "x\n"              reply "N\n" + N bytes: the text as the driver holds it
//   "q\n" or EOF       exit
// Errors: one line "error: ..." on stderr, exit 1.

#include <presage.h>

#include <iostream>
#include <string>
#include <vector>

class Buffer : public PresageCallback {
public:
    std::string get_past_stream() const { return past; }
    std::string get_future_stream() const { return empty; }
    std::string past;

private:
    const std::string empty;
};

static std::string printable(std::string s) {
    for (char& c : s) {
        if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f) c = '?';
    }
    return s;
}

int main(int argc, char** argv) {
    if (argc != 3) {
        std::cerr << "error: usage: presage-driver CONFIG.xml SUGGESTIONS" << std::endl;
        return 2;
    }
    std::ios::sync_with_stdio(false);
    try {
        Buffer buffer;
        Presage presage(&buffer, argv[1]);
        presage.config("Presage.Selector.SUGGESTIONS", argv[2]);
        std::string line;
        while (std::getline(std::cin, line)) {
            if (line.rfind("t ", 0) == 0) {
                std::string chars(std::stoul(line.substr(2)), '\0');
                if (!std::cin.read(&chars[0], chars.size())) break;
                buffer.past += chars;
            } else if (line == "s") {
                std::vector<std::string> words = presage.predict();
                std::cout << words.size() << '\n';
                for (const std::string& word : words) std::cout << printable(presage.completion(word)) << '\n';
                std::cout.flush();
            } else if (line == "x") {
                std::cout << buffer.past.size() << '\n' << buffer.past;
                std::cout.flush();
            } else if (line == "q") {
                break;
            } else {
                std::cerr << "error: unknown command " << line << std::endl;
                return 1;
            }
        }
    } catch (PresageException& e) {
        std::cerr << "error: presage: " << e.what() << std::endl;
        return 1;
    } catch (std::exception& e) {
        std::cerr << "error: " << e.what() << std::endl;
        return 1;
    }
    return 0;
}
