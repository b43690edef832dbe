#include "pjrt_runtime.h"

#include <dlfcn.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <mutex>
#include <functional>
#include <set>
#include <algorithm>
#include <sstream>
#include <sys/stat.h>

#include "pjrt_c_api.h"
#include "sha256.h"


namespace facet {
namespace {

const char *INSTALL_HINT = "install the CPU plugin with `pip install xla-cpu-pjrt==0.0.1` (facet-md depends on it), "
                           "or name a plugin library with FACET_PJRT_PLUGIN";

// The module of one bucket: each named slot @@NAME@@ -> that symbol's size, and an affine
// slot @@a,b,...,c@@ -> a*size_1 + b*size_2 + ... + c over the symbols in the template's
// order (N, E for the model; O, G, E for stage programs). facet.pjrt_program.fill does the
// same in Python.
std::string fill_template(const std::string &text, const std::vector<std::pair<std::string, long>> &symbols)
{
  std::string out;
  out.reserve(text.size() + 1024);
  size_t pos = 0;
  while (true) {
    size_t open = text.find("@@", pos);
    if (open == std::string::npos) break;
    size_t close = text.find("@@", open + 2);
    if (close == std::string::npos) break;
    std::string slot = text.substr(open + 2, close - open - 2);
    long value = 0;
    bool named = false;
    for (const auto &symbol : symbols)
      if (slot == symbol.first) value = symbol.second, named = true;
    if (!named) {
      std::vector<long> coefficients;
      std::stringstream in(slot);
      std::string item;
      while (std::getline(in, item, ',')) {
        char *end = nullptr;
        long c = std::strtol(item.c_str(), &end, 10);
        if (item.empty() || *end != '\0') coefficients.clear(), in.setstate(std::ios::failbit);
        else coefficients.push_back(c);
      }
      if (coefficients.size() != symbols.size() + 1)
        throw PjrtError("malformed slot '@@" + slot + "@@' in the model's StableHLO template: re-export the model");
      value = coefficients.back();
      for (size_t k = 0; k < symbols.size(); ++k) value += coefficients[k] * symbols[k].second;
    }
    out.append(text, pos, open - pos).append(std::to_string(value));
    pos = close + 2;
  }
  out.append(text, pos, std::string::npos);
  return out;
}

std::string host_fingerprint()
{
  std::ifstream in("/proc/cpuinfo");
  std::string line, parts;
  bool model = false, flags = false;
  while (std::getline(in, line) && !(model && flags)) {
    if (!model && line.rfind("model name", 0) == 0) parts += line, model = true;
    if (!flags && (line.rfind("flags", 0) == 0 || line.rfind("Features", 0) == 0)) parts += line, flags = true;
  }
  return sha256_hex(parts.data(), parts.size()).substr(0, 16);
}

std::string default_cache_dir()
{
  const char *env = std::getenv("FACET_CACHE_DIR");
  if (env) {
    std::string v(env);
    if (v.empty() || v == "0" || v == "off" || v == "none" || v == "false") return "";
    return v + "/pjrt";
  }
  const char *xdg = std::getenv("XDG_CACHE_HOME");
  const char *home = std::getenv("HOME");
  if (xdg && *xdg) return std::string(xdg) + "/facet/pjrt";
  if (home && *home) return std::string(home) + "/.cache/facet/pjrt";
  return "";
}

bool make_dirs(const std::string &path)
{
  for (size_t i = 1; i <= path.size(); ++i) {
    if (i == path.size() || path[i] == '/') {
      std::string sub = path.substr(0, i);
      if (mkdir(sub.c_str(), 0777) != 0 && errno != EEXIST) return false;
    }
  }
  return true;
}

std::string read_file(const std::string &path)
{
  std::ifstream in(path, std::ios::binary);
  if (!in) return "";
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

void write_file_atomically(const std::string &path, const char *data, size_t size)
{
  std::string tmp = path + ".tmp" + std::to_string(getpid());
  {
    std::ofstream out(tmp, std::ios::binary);
    if (!out) return;  // a cache that cannot be written only costs a compilation next time
    out.write(data, static_cast<std::streamsize>(size));
    if (!out) {
      std::remove(tmp.c_str());
      return;
    }
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) std::remove(tmp.c_str());
}

template <typename T> T args_of()
{
  T a;
  std::memset(&a, 0, sizeof(a));
  a.struct_size = sizeof(T);
  return a;
}

}  // namespace

// ---------------------------------------------------------------------------- plugin

std::string default_plugin_library(const std::string &device)
{
  const char *env = std::getenv("FACET_PJRT_PLUGIN");
  if (env && *env) return env;
  // This library is installed in site-packages/facet/; the plugin wheels install theirs in
  // site-packages/xla_plugins/xla_cpu_pjrt/ (xla-cpu-pjrt) and site-packages/jax_plugins/
  // xla_cuda12/ (jax-cuda12-pjrt).
  Dl_info info{};
  if (!dladdr(reinterpret_cast<void *>(&default_plugin_library), &info) || !info.dli_fname) return "";
  std::string here(info.dli_fname);
  std::string site = here.substr(0, here.find_last_of('/')) + "/..";
  std::string candidate = device == "cuda" ? site + "/jax_plugins/xla_cuda12/xla_cuda_plugin.so"
                                           : site + "/xla_plugins/xla_cpu_pjrt/xla_cpu_pjrt.so";
  struct stat st {};
  return stat(candidate.c_str(), &st) == 0 ? candidate : "";
}

std::shared_ptr<PjrtPlugin> PjrtPlugin::load(const std::string &library)
{
  static std::mutex mutex;
  static std::map<std::string, std::weak_ptr<PjrtPlugin>> loaded;
  std::lock_guard<std::mutex> lock(mutex);
  if (auto existing = loaded[library].lock()) return existing;
  if (library.empty()) throw PjrtError(std::string("no PJRT plugin library found: ") + INSTALL_HINT);
  // XLA logs benign ERROR lines while compiling (e.g. "Unsupported fusion type" from its
  // library matcher); real failures come back as PJRT errors. Quiet unless the user chose a level.
  setenv("TF_CPP_MIN_LOG_LEVEL", "3", 0);
  void *handle = dlopen(library.c_str(), RTLD_NOW | RTLD_LOCAL);
  if (!handle) {
    const char *why = dlerror();
    throw PjrtError("cannot load the PJRT plugin '" + library + "' (" + (why ? why : "unknown error") + "): " +
                    INSTALL_HINT);
  }
  using GetApi = const PJRT_Api *(*)();
  auto get_api = reinterpret_cast<GetApi>(dlsym(handle, "GetPjrtApi"));
  if (!get_api) {
    dlclose(handle);
    throw PjrtError("'" + library + "' is not a PJRT plugin (it exports no GetPjrtApi): " + INSTALL_HINT);
  }
  auto plugin = std::shared_ptr<PjrtPlugin>(new PjrtPlugin());
  plugin->api_ = get_api();
  plugin->library_ = library;
  plugin->handle_ = handle;  // never dlclose'd: XLA plugins do not support unloading
  if (!plugin->api_ || plugin->api_->pjrt_api_version.major_version != PJRT_API_MAJOR)
    throw PjrtError("the PJRT plugin '" + library + "' speaks PJRT C API major version " +
                    std::to_string(plugin->api_ ? plugin->api_->pjrt_api_version.major_version : -1) + ", this runtime " +
                    std::to_string(PJRT_API_MAJOR) + ": " + INSTALL_HINT);
  auto init = args_of<PJRT_Plugin_Initialize_Args>();
  plugin->check(plugin->api_->PJRT_Plugin_Initialize(&init), "initialising the PJRT plugin '" + library + "'");
  loaded[library] = plugin;
  return plugin;
}

void PjrtPlugin::discard(PJRT_Error *err) const
{
  if (!err) return;
  auto destroy = args_of<PJRT_Error_Destroy_Args>();
  destroy.error = err;
  api_->PJRT_Error_Destroy(&destroy);
}

void PjrtPlugin::check(PJRT_Error *err, const std::string &what) const
{
  if (!err) return;
  auto message = args_of<PJRT_Error_Message_Args>();
  message.error = err;
  api_->PJRT_Error_Message(&message);
  std::string text(message.message, message.message_size);
  auto destroy = args_of<PJRT_Error_Destroy_Args>();
  destroy.error = err;
  api_->PJRT_Error_Destroy(&destroy);
  if (text.size() > 2000) text = text.substr(0, 2000) + " ...";
  throw PjrtError(what + ": " + text);
}

// ---------------------------------------------------------------------------- model

PjrtModel::PjrtModel(const ModelFile &file, const PjrtOptions &options) : file_(file), options_(options)
{
  const std::string section = "stablehlo_template:" + options.device;
  if (!file.has_section(section)) {
    std::string platforms;
    for (const auto &entry : file.sections)
      if (entry.first.rfind("stablehlo_template:", 0) == 0)
        platforms += (platforms.empty() ? "" : ",") + entry.first.substr(19);
    if (platforms.empty())
      throw ModelFileError(file.path + ": this model file (format " + std::to_string(file.format_version) +
                           ") has no program for runtimes without Python. Add one with `python -m facet.export "
                           "upgrade " + file.path + " -o model.hlo` (or export without --no-pjrt), or run it "
                           "through Python (pair_style facet ... runtime python).");
    throw ModelFileError(file.path + ": no " + options.device + " program in this model file (exported for " +
                         platforms + "). Re-export it with `python -m facet.export CHECKPOINT -o model.hlo "
                         "--platforms " + platforms + "," + options.device + "`.");
  }
  if (!file.has_section("xla_compile_options"))
    throw ModelFileError(file.path + ": no 'xla_compile_options' section. Re-export the model.");
  if (file.header.has("committee")) {
    const Json &committee = file.header["committee"];
    const std::vector<std::string> expected = {"atom_energies", "dE_dedge", "atom_energy_std", "member_forces",
                                               "member_energies"};
    if (!committee.has("outputs") || committee["outputs"].strings() != expected)
      throw ModelFileError(file.path + ": a committee file from an earlier Facet (its outputs are not " +
                           "atom_energies, dE_dedge, atom_energy_std, member_forces, member_energies). Re-export "
                           "it with `python -m facet.export committee CKPT1 CKPT2 ... -o committee.hlo`.");
    committee_members_ = int(committee["members"].integer());
  }
  compile_options_ = file.section("xla_compile_options");
  programs_.push_back(Program{"model", file.section(section), "", {}, {}, {}});
  // stage programs in the owned/ghost layout of facet.stages (symbols O, G, E); others are ignored
  if (file.header.has("stages") && file.header["stages"].kind() == Json::Kind::Object &&
      file.header["stages"].has("symbols") && file.header["stages"]["symbols"].string() == "O, G, E") {
    const Json &stages = file.header["stages"];
    feature_size_ = int(stages["feature_size"].integer());
    const Json &list = stages["programs"];
    for (size_t k = 0; k < list.size(); ++k) {
      const std::string name = list[k]["name"].string();
      const std::string stage_section = "stage_template:" + options.device + ":" + name;
      if (!file.has_section(stage_section)) {  // stages without PJRT templates: no exchange here
        programs_.resize(1);
        stage_names_.clear();
        feature_size_ = 0;
        break;
      }
      std::vector<std::string> inputs = list[k]["inputs"].strings();
      inputs.erase(inputs.begin(), inputs.begin() + std::min<size_t>(5, inputs.size()));  // the graph
      programs_.push_back(Program{name, file.section(stage_section), "", inputs, list[k]["outputs"].strings(), {}});
      stage_names_.push_back(name);
    }
  }
  std::string library = options.plugin.empty() ? default_plugin_library(options.device) : options.plugin;
  plugin_ = PjrtPlugin::load(library);
  const PJRT_Api *api = plugin_->api();
  auto create = args_of<PJRT_Client_Create_Args>();
  plugin_->check(api->PJRT_Client_Create(&create), "creating a PJRT client with '" + library + "'");
  client_ = create.client;
  auto devices = args_of<PJRT_Client_AddressableDevices_Args>();
  devices.client = client_;
  plugin_->check(api->PJRT_Client_AddressableDevices(&devices), "listing the PJRT devices");
  if (devices.num_addressable_devices == 0) throw PjrtError("the PJRT plugin '" + library + "' has no device");
  device_ = devices.addressable_devices[0];
  if (options_.cache_dir.empty()) options_.cache_dir = default_cache_dir();
  if (options_.cache_dir == "off") options_.cache_dir.clear();
  for (Program &program : programs_) {
    std::string identity = sha256_hex(program.template_text.data(), program.template_text.size()) +
        sha256_hex(compile_options_.data(), compile_options_.size()) + library +
        std::to_string(api->pjrt_api_version.minor_version) + host_fingerprint();
    program.cache_key_prefix = sha256_hex(identity.data(), identity.size()).substr(0, 32);
  }
}

PjrtModel::~PjrtModel()
{
  if (!plugin_) return;
  const PJRT_Api *api = plugin_->api();
  for (Program &program : programs_)
    for (auto &entry : program.executables) {
      auto destroy = args_of<PJRT_LoadedExecutable_Destroy_Args>();
      destroy.executable = entry.second;
      plugin_->discard(api->PJRT_LoadedExecutable_Destroy(&destroy));
    }
  if (client_) {
    auto destroy = args_of<PJRT_Client_Destroy_Args>();
    destroy.client = client_;
    plugin_->discard(api->PJRT_Client_Destroy(&destroy));
  }
}

std::pair<long, long> PjrtModel::bucket_for(long n_atoms, long n_edges) const
{
  auto ladder = padded_sizes(n_atoms, n_edges, file_.buckets);
  const auto compiled = buckets_seen();
  if (compiled.empty() || std::find(compiled.begin(), compiled.end(), ladder) != compiled.end()) return ladder;
  // Reuse a compiled bucket at most one rung larger in each dimension (ModelRunner.bucket_for).
  int s = file_.buckets.steps_per_octave;
  long n_max = ladder_ceil(ladder.first, s, 1) + 1, e_max = ladder_ceil(ladder.second + 1, s, 1);
  long best_cost = -1;
  std::pair<long, long> best = ladder;
  for (const auto &bucket : compiled) {
    long n = bucket.first, e = bucket.second;
    if (n_atoms + 1 <= n && n <= n_max && n_edges <= e && e <= e_max) {
      long cost = 16 * n + e;  // an atom costs about as much as a dozen edges
      if (best_cost < 0 || cost < best_cost) best_cost = cost, best = bucket;
    }
  }
  return best;
}

std::pair<long, long> PjrtModel::precompile(long n_atoms, long n_edges)
{
  auto bucket = bucket_for(n_atoms, n_edges);
  executable(programs_[0], bucket.first, bucket.second);
  return bucket;
}

std::vector<std::pair<long, long>> PjrtModel::buckets_seen() const
{
  std::vector<std::pair<long, long>> out;  // the model's; stage programs have their own buckets
  for (const auto &entry : programs_[0].executables) out.emplace_back(entry.first[0], entry.first[1]);
  return out;
}

PJRT_LoadedExecutable *PjrtModel::executable(Program &program, long n_pad, long e_pad, long g_pad)
{
  const Shape key = {n_pad, e_pad, g_pad};
  auto it = program.executables.find(key);
  if (it != program.executables.end()) return it->second;
  const PJRT_Api *api = plugin_->api();
  auto t0 = std::chrono::steady_clock::now();
  std::string cache_file;
  if (!options_.cache_dir.empty() && make_dirs(options_.cache_dir))
    cache_file = options_.cache_dir + "/" + program.cache_key_prefix + "-" + std::to_string(n_pad) + "x" +
        (program.name == "model" ? std::string() : std::to_string(g_pad) + "x") +
        std::to_string(e_pad) + ".bin";
  PJRT_LoadedExecutable *loaded = nullptr;
  if (!cache_file.empty()) {
    std::string bytes = read_file(cache_file);
    if (!bytes.empty()) {
      auto load = args_of<PJRT_Executable_DeserializeAndLoad_Args>();
      load.client = client_;
      load.serialized_executable = bytes.data();
      load.serialized_executable_size = bytes.size();
      PJRT_Error *err = api->PJRT_Executable_DeserializeAndLoad(&load);
      if (err) {  // a stale or foreign entry: compile instead
        plugin_->discard(err);
      } else {
        loaded = load.loaded_executable;
        ++num_cache_loads_;
      }
    }
  }
  if (!loaded) {
    std::string text = program.name == "model"
        ? fill_template(program.template_text, {{"N", n_pad}, {"E", e_pad}})
        : fill_template(program.template_text, {{"O", n_pad}, {"G", g_pad}, {"E", e_pad}});
    auto code = args_of<PJRT_Program>();
    code.code = text.data();
    code.code_size = text.size();
    code.format = "mlir";
    code.format_size = 4;
    auto compile = args_of<PJRT_Client_Compile_Args>();
    compile.client = client_;
    compile.program = &code;
    compile.compile_options = compile_options_.data();
    compile.compile_options_size = compile_options_.size();
    plugin_->check(api->PJRT_Client_Compile(&compile),
                   file_.path + ": the PJRT plugin '" + plugin_->library() + "' could not compile the " + (program.name == "model" ? std::string("model") : "stage program " + program.name) + " (exported "
                   "by jax " + file_.jax_version + "; this plugin reads programs from jax 0.10 and older, see "
                   "cpp/README.md). Re-export the model with a supported jax, or run it through Python (runtime python)");
    loaded = compile.executable;
    ++num_compilations_;
    if (!cache_file.empty()) {
      auto get = args_of<PJRT_LoadedExecutable_GetExecutable_Args>();
      get.loaded_executable = loaded;
      PJRT_Error *err = api->PJRT_LoadedExecutable_GetExecutable(&get);
      if (!err) {
        auto serialize = args_of<PJRT_Executable_Serialize_Args>();
        serialize.executable = get.executable;
        err = api->PJRT_Executable_Serialize(&serialize);
        if (!err) {
          write_file_atomically(cache_file, serialize.serialized_bytes, serialize.serialized_bytes_size);
          if (serialize.serialized_executable_deleter)
            serialize.serialized_executable_deleter(serialize.serialized_executable);
        }
        auto destroy = args_of<PJRT_Executable_Destroy_Args>();
        destroy.executable = get.executable;
        PJRT_Error *derr = api->PJRT_Executable_Destroy(&destroy);
        if (derr) err = err ? err : derr;
      }
      plugin_->discard(err);  // no cache entry: only the next start-up pays
    }
  }
  compile_seconds_ += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  program.executables[key] = loaded;
  return loaded;
}

namespace {

struct Buffers {
  const PjrtPlugin *plugin;
  std::vector<PJRT_Buffer *> list;
  ~Buffers()
  {
    for (PJRT_Buffer *b : list) {
      if (!b) continue;
      auto destroy = args_of<PJRT_Buffer_Destroy_Args>();
      destroy.buffer = b;
      plugin->discard(plugin->api()->PJRT_Buffer_Destroy(&destroy));
    }
  }
};

void await_event(const PjrtPlugin &plugin, PJRT_Event *event, const char *what)
{
  if (!event) return;
  auto wait = args_of<PJRT_Event_Await_Args>();
  wait.event = event;
  PJRT_Error *err = plugin.api()->PJRT_Event_Await(&wait);
  auto destroy = args_of<PJRT_Event_Destroy_Args>();
  destroy.event = event;
  plugin.api()->PJRT_Event_Destroy(&destroy);
  plugin.check(err, what);
}

}  // namespace

namespace {

void store_as(std::vector<char> &buf, bool f64, size_t count, const std::function<double(size_t)> &value)
{
  buf.resize(count * (f64 ? 8 : 4));
  for (size_t i = 0; i < count; ++i) {
    double v = value(i);
    if (f64) std::memcpy(buf.data() + 8 * i, &v, 8);
    else {
      float f = static_cast<float>(v);
      std::memcpy(buf.data() + 4 * i, &f, 4);
    }
  }
}

double load_as(const std::vector<char> &buf, bool f64, size_t i)
{
  if (f64) {
    double v;
    std::memcpy(&v, buf.data() + 8 * i, 8);
    return v;
  }
  float f;
  std::memcpy(&f, buf.data() + 4 * i, 4);
  return double(f);
}

}  // namespace

void PjrtModel::stage_graph(long n_pad, long e_pad, const double *edge_vectors, const int *senders,
                            const int *receivers, long n_edges, const int *species, long n_atoms)
{
  const bool f64 = file_.dtype == "float64";
  const double pad = file_.padding_edge_length;
  store_as(in_floats_, f64, size_t(3 * e_pad), [&](size_t i) {
    return long(i) < 3 * n_edges ? edge_vectors[i] : (i % 3 == 0 ? pad : 0.0);
  });
  in_senders_.assign(size_t(e_pad), int(n_atoms));  // padding edges point at the first padding atom
  in_receivers_.assign(size_t(e_pad), int(n_atoms));
  std::memcpy(in_senders_.data(), senders, sizeof(int) * size_t(n_edges));
  std::memcpy(in_receivers_.data(), receivers, sizeof(int) * size_t(n_edges));
  in_species_.assign(size_t(n_pad), 0);
  std::memcpy(in_species_.data(), species, sizeof(int) * size_t(n_atoms));
}

std::vector<std::vector<char>> PjrtModel::execute(PJRT_LoadedExecutable *exe, const std::vector<HostArray> &inputs,
                                                  const std::vector<size_t> &output_bytes, const std::string &what)
{
  const PJRT_Api *api = plugin_->api();
  Buffers args{plugin_.get(), {}};
  for (const HostArray &in : inputs) {
    auto put = args_of<PJRT_Client_BufferFromHostBuffer_Args>();
    put.client = client_;
    put.data = in.data;
    put.type = static_cast<PJRT_Buffer_Type>(in.type);
    put.dims = in.dims.data();
    put.num_dims = in.dims.size();
    // copied during the call: the event below is then already ready, so waiting on it needs
    // no hand-off from the plugin's transfer thread
    put.host_buffer_semantics = PJRT_HostBufferSemantics_kImmutableOnlyDuringCall;
    put.device = device_;
    plugin_->check(api->PJRT_Client_BufferFromHostBuffer(&put), "copying the model inputs to the device");
    args.list.push_back(put.buffer);
    await_event(*plugin_, put.done_with_host_buffer, "copying the model inputs to the device");
  }
  Buffers outputs{plugin_.get(), std::vector<PJRT_Buffer *>(output_bytes.size(), nullptr)};
  PJRT_Buffer *const *arg_list = args.list.data();
  PJRT_Buffer **out_list = outputs.list.data();
  PJRT_Event *done = nullptr;
  auto options = args_of<PJRT_ExecuteOptions>();
  auto run = args_of<PJRT_LoadedExecutable_Execute_Args>();
  run.executable = exe;
  run.options = &options;
  run.argument_lists = &arg_list;
  run.num_devices = 1;
  run.num_args = args.list.size();
  run.output_lists = &out_list;
  run.device_complete_events = &done;
  const auto started = std::chrono::steady_clock::now();
  plugin_->check(api->PJRT_LoadedExecutable_Execute(&run), file_.path + ": running " + what);
  await_event(*plugin_, done, (file_.path + ": running " + what).c_str());
  execute_seconds_ += std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
  std::vector<std::vector<char>> out(output_bytes.size());
  for (size_t k = 0; k < output_bytes.size(); ++k) {
    out[k].resize(output_bytes[k]);
    auto fetch = args_of<PJRT_Buffer_ToHostBuffer_Args>();
    fetch.src = outputs.list[k];
    fetch.dst = out[k].data();
    fetch.dst_size = out[k].size();
    plugin_->check(api->PJRT_Buffer_ToHostBuffer(&fetch), "copying the model outputs to the host");
    await_event(*plugin_, fetch.event, "copying the model outputs to the host");
  }
  return out;
}

void PjrtModel::evaluate(const double *edge_vectors, const int *senders, const int *receivers, long n_edges,
                         const int *species, const double *energy_mask, long n_atoms, double *atom_energies,
                         double *edge_gradients)
{
  auto bucket = bucket_for(n_atoms, n_edges);
  long n_pad = bucket.first, e_pad = bucket.second;
  PJRT_LoadedExecutable *exe = executable(programs_[0], n_pad, e_pad);
  const bool f64 = file_.dtype == "float64";
  const size_t fsize = f64 ? 8 : 4;
  stage_graph(n_pad, e_pad, edge_vectors, senders, receivers, n_edges, species, n_atoms);
  store_as(in_mask_, f64, size_t(n_pad), [&](size_t i) { return long(i) < n_atoms ? energy_mask[i] : 0.0; });
  const int ftype = f64 ? PJRT_Buffer_Type_F64 : PJRT_Buffer_Type_F32;
  const std::vector<HostArray> inputs = {{in_floats_.data(), ftype, {e_pad, 3}},
                                         {in_senders_.data(), PJRT_Buffer_Type_S32, {e_pad}},
                                         {in_receivers_.data(), PJRT_Buffer_Type_S32, {e_pad}},
                                         {in_species_.data(), PJRT_Buffer_Type_S32, {n_pad}},
                                         {in_mask_.data(), ftype, {n_pad}}};
  std::vector<size_t> sizes = {size_t(n_pad) * fsize, size_t(3 * e_pad) * fsize};
  const size_t members = size_t(committee_members_);
  if (members) {
    sizes.push_back(size_t(n_pad) * fsize);
    sizes.push_back(members * size_t(n_pad) * 3 * fsize);
    sizes.push_back(members * fsize);
  }
  auto out = execute(exe, inputs, sizes, "the model");
  for (long i = 0; i < n_atoms; ++i) atom_energies[i] = load_as(out[0], f64, size_t(i));
  for (long i = 0; i < 3 * n_edges; ++i) edge_gradients[i] = load_as(out[1], f64, size_t(i));
  if (members) {
    atom_energy_std_.resize(size_t(n_atoms));
    for (long i = 0; i < n_atoms; ++i) atom_energy_std_[size_t(i)] = load_as(out[2], f64, size_t(i));
    member_forces_.resize(members * size_t(n_atoms) * 3);  // (members, n_pad, 3) -> (members, n_atoms, 3)
    for (size_t m = 0; m < members; ++m)
      for (size_t i = 0; i < size_t(3 * n_atoms); ++i)
        member_forces_[m * size_t(3 * n_atoms) + i] = load_as(out[3], f64, m * size_t(3 * n_pad) + i);
    member_energies_.resize(members);
    for (size_t m = 0; m < members; ++m) member_energies_[m] = load_as(out[4], f64, m);
  }
}

void PjrtModel::run_stage(const std::string &name, const double *edge_vectors, const int *senders,
                          const int *receivers, long n_edges, const int *species, long n_atoms, long n_owned,
                          const std::vector<const double *> &node_inputs, const std::vector<double *> &outputs)
{
  auto found = std::find(stage_names_.begin(), stage_names_.end(), name);
  if (found == stage_names_.end()) throw PjrtError(file_.path + ": no stage program '" + name + "' in this model file");
  Program &program = programs_[size_t(found - stage_names_.begin()) + 1];
  if (node_inputs.size() != program.inputs.size() || outputs.size() != program.outputs.size())
    throw PjrtError("stage program '" + name + "' takes " + std::to_string(program.inputs.size()) + " node inputs and " +
                    std::to_string(program.outputs.size()) + " outputs");
  // facet.buckets.stage_padded_sizes: owned atoms and edges as the model's buckets (with one
  // padding owned row for the padding edges), ghosts on their own rung
  const long n_ghosts = n_atoms - n_owned;
  auto bucket = padded_sizes(n_owned, n_edges, file_.buckets);
  const long o_pad = bucket.first, e_pad = bucket.second;
  const long g_pad = ladder_ceil(n_ghosts, file_.buckets.steps_per_octave, file_.buckets.min_atoms);
  PJRT_LoadedExecutable *exe = executable(program, o_pad, e_pad, g_pad);
  const bool f64 = file_.dtype == "float64";
  const size_t fsize = f64 ? 8 : 4;
  const int ftype = f64 ? PJRT_Buffer_Type_F64 : PJRT_Buffer_Type_F32;
  const long width = feature_size_;
  // ghosts follow the padded owned block: node i -> row(i)
  const long shift = o_pad - n_owned;
  auto row = [&](long i) { return i < n_owned ? i : i + shift; };
  store_as(in_floats_, f64, size_t(3 * e_pad), [&](size_t i) {
    return long(i) < 3 * n_edges ? edge_vectors[i] : (i % 3 == 0 ? file_.padding_edge_length : 0.0);
  });
  in_senders_.assign(size_t(e_pad), int(n_owned));  // padding edges: the first padding owned row
  in_receivers_.assign(size_t(e_pad), int(n_owned));
  for (long e = 0; e < n_edges; ++e) {
    in_senders_[size_t(e)] = int(row(senders[e]));
    in_receivers_[size_t(e)] = receivers[e];
  }
  in_species_.assign(size_t(o_pad + g_pad), 0);  // owned block, then ghost block
  for (long i = 0; i < n_atoms; ++i) in_species_[size_t(row(i))] = species[i];
  std::vector<HostArray> inputs = {{in_floats_.data(), ftype, {e_pad, 3}},
                                   {in_senders_.data(), PJRT_Buffer_Type_S32, {e_pad}},
                                   {in_receivers_.data(), PJRT_Buffer_Type_S32, {e_pad}},
                                   {in_species_.data(), PJRT_Buffer_Type_S32, {o_pad}},
                                   {in_species_.data() + o_pad, PJRT_Buffer_Type_S32, {g_pad}}};
  in_nodes_.resize(node_inputs.size());
  for (size_t k = 0; k < node_inputs.size(); ++k) {
    const std::string &what = program.inputs[k];
    const double *src = node_inputs[k];
    if (what == "features") {  // every node: padded row r holds node r (owned) or r - shift (ghost)
      store_as(in_nodes_[k], f64, size_t((o_pad + g_pad) * width), [&](size_t i) {
        const long r = long(i) / width, node = r < o_pad ? r : r - shift;
        const bool real = r < o_pad ? r < n_owned : node < n_atoms;
        return real ? src[node * width + long(i) % width] : 0.0;
      });
      inputs.push_back({in_nodes_[k].data(), ftype, {o_pad + g_pad, width}});
    } else {  // the owned nodes: cotangent (width) or energy_mask (1)
      const long w = what == "cotangent" ? width : 1;
      store_as(in_nodes_[k], f64, size_t(o_pad * w), [&](size_t i) { return long(i) < n_owned * w ? src[i] : 0.0; });
      inputs.push_back({in_nodes_[k].data(), ftype, w == 1 ? std::vector<int64_t>{o_pad} : std::vector<int64_t>{o_pad, w}});
    }
  }
  std::vector<size_t> sizes;
  for (const std::string &what : program.outputs)
    sizes.push_back(size_t(what == "dE_dedge" ? 3 * e_pad
                           : what == "cotangent" ? (o_pad + g_pad) * width
                           : what == "features" ? o_pad * width : o_pad) * fsize);
  auto out = execute(exe, inputs, sizes, "stage program " + name);
  for (size_t k = 0; k < outputs.size(); ++k) {
    const std::string &what = program.outputs[k];
    if (what == "dE_dedge") {
      for (long i = 0; i < 3 * n_edges; ++i) outputs[k][i] = load_as(out[k], f64, size_t(i));
    } else if (what == "cotangent") {  // every node
      for (long i = 0; i < n_atoms; ++i)
        for (long c = 0; c < width; ++c) outputs[k][i * width + c] = load_as(out[k], f64, size_t(row(i) * width + c));
    } else {  // the owned nodes
      const long w = what == "features" ? width : 1;
      for (long i = 0; i < n_owned * w; ++i) outputs[k][i] = load_as(out[k], f64, size_t(i));
    }
  }
}

}  // namespace facet
