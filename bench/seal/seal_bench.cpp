// henn: side-by-side timing of Microsoft SEAL 4.x CKKS operations, with the same op
// definitions as `henn bench ckks` (crates/henn/src/cli/bench.rs). Our own code; build it
// against a SEAL you obtain yourself (see README.md). Single-threaded: SEAL's evaluator
// is single-threaded.
//
// usage: seal_bench --preset resnet|small [--json] [--iters K] [--budget SECONDS] [--cpu-time]

#include <seal/seal.h>
#include <seal/util/ntt.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <functional>
#include <random>
#include <string>
#include <vector>

using namespace seal;

namespace {

struct Row {
    std::string op;
    double median_us;
    std::size_t iters;
    std::string note;
};

struct Plan {
    std::size_t exact = 0; // > 0: exactly this many iterations
    std::size_t max = 50;  // otherwise: up to max iterations (at least 5) within budget
    double budget_s = 1.5;
    bool cpu_time = false; // CLOCK_THREAD_CPUTIME_ID instead of wall time
};

double thread_cpu_us() {
    timespec ts{};
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return ts.tv_sec * 1e6 + ts.tv_nsec / 1e3;
}

// Median wall time of f in microseconds after one untimed warm-up call (as henn's median_us).
std::pair<double, std::size_t> median_us(const Plan &plan, const std::function<void()> &f) {
    using clk = std::chrono::steady_clock;
    f();
    std::vector<double> samples;
    auto start = clk::now();
    for (;;) {
        if (plan.cpu_time) {
            double t = thread_cpu_us();
            f();
            samples.push_back(thread_cpu_us() - t);
        } else {
            auto t = clk::now();
            f();
            samples.push_back(std::chrono::duration<double, std::micro>(clk::now() - t).count());
        }
        bool done;
        if (plan.exact > 0) {
            done = samples.size() >= plan.exact;
        } else {
            double el = std::chrono::duration<double>(clk::now() - start).count();
            done = samples.size() >= plan.max || (samples.size() >= 5 && el >= plan.budget_s);
        }
        if (done) break;
    }
    std::sort(samples.begin(), samples.end());
    std::size_t m = samples.size();
    double med = (m % 2 == 1) ? samples[m / 2] : (samples[m / 2 - 1] + samples[m / 2]) / 2.0;
    return {med, m};
}

} // namespace

int main(int argc, char **argv) {
    std::string preset = "resnet";
    bool json = false;
    std::size_t iters = 0;
    double budget = 1.5;
    bool cpu_time = false;
    for (int i = 1; i < argc; i++) {
        std::string a = argv[i];
        if (a == "--preset" && i + 1 < argc) preset = argv[++i];
        else if (a == "--json") json = true;
        else if (a == "--iters" && i + 1 < argc) iters = std::stoul(argv[++i]);
        else if (a == "--budget" && i + 1 < argc) budget = std::stod(argv[++i]);
        else if (a == "--cpu-time") cpu_time = true;
        else {
            std::fprintf(stderr, "usage: %s --preset resnet|small [--json] [--iters K] [--budget S] [--cpu-time]\n", argv[0]);
            return 2;
        }
    }

    std::size_t n;
    std::vector<int> bits;
    double scale;
    if (preset == "resnet") {
        // henn resnet: N = 2^14, data primes [60, 35 x 8], scale 2^35. SEAL takes its
        // special prime from the end of the list: one 60-bit prime (dnum = 9, one prime
        // per digit), where henn uses two 49-bit special primes and 5 digits.
        n = 16384;
        bits = {60, 35, 35, 35, 35, 35, 35, 35, 35, 60};
        scale = std::pow(2.0, 35);
    } else if (preset == "small") {
        n = 8192;
        bits = {60, 40, 40, 60};
        scale = std::pow(2.0, 40);
    } else {
        std::fprintf(stderr, "unknown preset %s\n", preset.c_str());
        return 2;
    }

    EncryptionParameters parms(scheme_type::ckks);
    parms.set_poly_modulus_degree(n);
    parms.set_coeff_modulus(CoeffModulus::Create(n, bits));
    SEALContext context(parms, true, sec_level_type::tc128);
    if (!context.parameters_set()) {
        std::fprintf(stderr, "bad parameters: %s\n", context.parameter_error_message());
        return 1;
    }

    std::fprintf(stderr, "generating keys (secret, public, relinearization, 9 Galois)...\n");
    KeyGenerator keygen(context);
    SecretKey sk = keygen.secret_key();
    PublicKey pk;
    keygen.create_public_key(pk);
    RelinKeys rlk;
    keygen.create_relin_keys(rlk);
    GaloisKeys gk;
    std::vector<int> steps = {1, 2, 3, 4, 5, 6, 7, 8, 9};
    keygen.create_galois_keys(steps, gk);

    CKKSEncoder encoder(context);
    Encryptor encryptor(context, pk);
    Decryptor decryptor(context, sk);
    Evaluator evaluator(context);
    std::size_t slots = encoder.slot_count();

    std::mt19937_64 gen(std::random_device{}());
    std::uniform_real_distribution<double> dist(-1.0, 1.0);
    std::vector<double> v1(slots), v2(slots);
    for (auto &x : v1) x = dist(gen);
    for (auto &x : v2) x = dist(gen);
    Plaintext pt1, pt2;
    encoder.encode(v1, scale, pt1);
    encoder.encode(v2, scale, pt2);
    Ciphertext ct1, ct2, prod;
    encryptor.encrypt(pt1, ct1);
    encryptor.encrypt(pt2, ct2);
    evaluator.multiply(ct1, ct2, prod);
    evaluator.relinearize_inplace(prod, rlk);

    auto plan = [&](std::size_t max) {
        Plan p;
        p.exact = iters;
        p.max = max;
        p.budget_s = budget;
        p.cpu_time = cpu_time;
        return p;
    };
    std::vector<Row> rows;
    auto record = [&](const char *op, const char *note, Plan p, const std::function<void()> &f) {
        auto r = median_us(p, f);
        rows.push_back({op, r.first, r.second, note});
    };

    Plaintext pt_tmp;
    Ciphertext ct_tmp;
    std::vector<double> out;
    record("encode", "N/2 reals", plan(50), [&] { encoder.encode(v1, scale, pt_tmp); });
    record("encrypt", "public key", plan(50), [&] { encryptor.encrypt(pt1, ct_tmp); });
    record("decrypt", "decrypt + decode", plan(50), [&] {
        decryptor.decrypt(ct1, pt_tmp);
        encoder.decode(pt_tmp, out);
    });
    record("add", "out of place", plan(200), [&] { evaluator.add(ct1, ct2, ct_tmp); });
    record("mul_plain", "out of place", plan(200), [&] { evaluator.multiply_plain(ct1, pt2, ct_tmp); });
    // SEAL has no ciphertext x scalar: a constant is encoded (all slots equal) and
    // multiplied as a plaintext. Timed with and without the constant's encoding.
    Plaintext pt_c;
    encoder.encode(0.7, ct1.parms_id(), scale, pt_c);
    record("mul_const", "encode(const) + multiply_plain", plan(200), [&] {
        Plaintext c;
        encoder.encode(0.7, ct1.parms_id(), scale, c);
        evaluator.multiply_plain(ct1, c, ct_tmp);
    });
    record("mul_const.mulplain", "multiply_plain part only", plan(200), [&] { evaluator.multiply_plain(ct1, pt_c, ct_tmp); });
    record("mul_relin", "multiply + relinearize", plan(50), [&] {
        evaluator.multiply(ct1, ct2, ct_tmp);
        evaluator.relinearize_inplace(ct_tmp, rlk);
    });
    record("square_relin", "square + relinearize", plan(50), [&] {
        evaluator.square(ct1, ct_tmp);
        evaluator.relinearize_inplace(ct_tmp, rlk);
    });
    record("rescale", "rescale_to_next, top level", plan(100), [&] { evaluator.rescale_to_next(prod, ct_tmp); });
    record("rotate", "rotate_vector by 1", plan(50), [&] { evaluator.rotate_vector(ct1, 1, gk, ct_tmp); });
    {
        // SEAL has no hoisting: 9 independent rotations, reported per rotation.
        std::vector<Ciphertext> outs(steps.size());
        auto r = median_us(plan(20), [&] {
            for (std::size_t i = 0; i < steps.size(); i++) evaluator.rotate_vector(ct1, steps[i], gk, outs[i]);
        });
        rows.push_back({"rotate_hoisted", r.first / steps.size(), r.second, "no hoisting in SEAL: 9 rotations / 9"});
    }
    record("mul", "multiply only (3 parts)", plan(100), [&] { evaluator.multiply(ct1, ct2, ct_tmp); });
    {
        Ciphertext three;
        evaluator.multiply(ct1, ct2, three);
        record("relin", "relinearize only", plan(50), [&] {
            ct_tmp = three;
            evaluator.relinearize_inplace(ct_tmp, rlk);
        });
        record("copy3", "copy of a 3-part ct (subtract from relin)", plan(100), [&] { ct_tmp = three; });
    }
    {
        auto cd = context.first_context_data();
        auto tables = cd->small_ntt_tables();
        for (int idx : {1, 0}) {
            const util::NTTTables &t = tables[idx];
            std::uint64_t q = t.modulus().value();
            std::uniform_int_distribution<std::uint64_t> ud(0, q - 1);
            std::vector<std::uint64_t> buf(n);
            for (auto &x : buf) x = ud(gen);
            record(idx == 1 ? "ntt" : "ntt_q0", idx == 1 ? "ntt_negacyclic_harvey, q_1" : "ntt_negacyclic_harvey, q_0",
                   plan(500), [&] { util::ntt_negacyclic_harvey(util::CoeffIter(buf.data()), t); });
        }
    }

    if (json) {
        std::printf("[\n");
        for (std::size_t i = 0; i < rows.size(); i++) {
            std::printf("  {\"op\": \"%s\", \"preset\": \"%s\", \"threads\": 1, \"median_us\": %.3f, \"clock\": \"%s\", \"impl\": \"seal-%d.%d.%d\"}%s\n",
                        rows[i].op.c_str(), preset.c_str(), rows[i].median_us, cpu_time ? "thread_cpu" : "wall", SEAL_VERSION_MAJOR, SEAL_VERSION_MINOR,
                        SEAL_VERSION_PATCH, i + 1 < rows.size() ? "," : "");
        }
        std::printf("]\n");
    } else {
        std::printf("SEAL %d.%d.%d bench: preset %s (N = %zu, coeff_modulus bits", SEAL_VERSION_MAJOR,
                    SEAL_VERSION_MINOR, SEAL_VERSION_PATCH, preset.c_str(), n);
        for (int b : bits) std::printf(" %d", b);
        std::printf(", scale 2^%.0f), 1 thread, %s time\n", std::log2(scale), cpu_time ? "thread CPU" : "wall");
        std::printf("%-20s %14s %6s  note\n", "op", "median (us)", "iters");
        for (auto &r : rows) std::printf("%-20s %14.1f %6zu  %s\n", r.op.c_str(), r.median_us, r.iters, r.note.c_str());
    }
    return 0;
}
