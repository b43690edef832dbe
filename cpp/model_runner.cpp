/* Facet-MD: opening a model with the requested runtime.  See model_runner.h. */

#include "model_runner.h"

#include <dlfcn.h>
#include <sys/stat.h>

#include <cmath>
#include <cstdio>

#include "runtime/model_file.h"
#include "runtime/pjrt_runtime.h"

namespace FacetMD {

namespace {

class PjrtRunner : public ModelRunner {
 public:
  PjrtRunner(const std::string &path, const RunnerOptions &options)
  {
    facet::PjrtOptions pjrt;
    pjrt.plugin = options.plugin;
    pjrt.device = options.device;
    model_.reset(new facet::PjrtModel(facet::ModelFile::read(path), pjrt));
    const facet::ModelFile &file = model_->file();
    info_.elements = file.elements;
    info_.cutoff = file.cutoff;
    info_.num_layers = file.num_layers;
    info_.dtype = file.dtype;
    info_.description = "PJRT runtime (" + options.device + ", plugin " + model_->plugin_library() +
        "), model file format " + std::to_string(file.format_version) + ", exported with jax " + file.jax_version;
  }

  const ModelInfo &info() const override { return info_; }
  const std::vector<double> *atom_energy_std() const override
  {
    return model_->committee_members() ? &model_->atom_energy_std() : nullptr;
  }
  int committee_members() const override { return model_->committee_members(); }
  const std::vector<double> *member_forces() const override
  {
    return model_->committee_members() ? &model_->member_forces() : nullptr;
  }

  int feature_size() const override { return model_->stage_names().empty() ? 0 : model_->feature_size(); }
  double execute_seconds() const override { return model_->execute_seconds(); }
  void run_stage(const std::string &name, const double *edge_vectors, const int32_t *senders,
                 const int32_t *receivers, int64_t nedges, const int32_t *species, int64_t nnodes, int64_t nowned,
                 const std::vector<const double *> &node_inputs, const std::vector<double *> &outputs) override
  {
    model_->run_stage(name, edge_vectors, senders, receivers, nedges, species, nnodes, nowned, node_inputs, outputs);
  }

  void compute(const double *edge_vectors, const int32_t *senders, const int32_t *receivers, int64_t nedges,
               const int32_t *species, const double *energy_mask, int64_t nnodes,
               std::vector<double> &atom_energies, std::vector<double> &de_dedge) override
  {
    atom_energies.resize(static_cast<size_t>(nnodes));
    de_dedge.resize(3 * static_cast<size_t>(nedges));
    model_->evaluate(edge_vectors, senders, receivers, nedges, species, energy_mask, nnodes, atom_energies.data(),
                     de_dedge.data());
    for (double v : atom_energies)
      if (!std::isfinite(v)) throw RunnerError("model returned non-finite atom energies");
    for (double v : de_dedge)
      if (!std::isfinite(v)) throw RunnerError("model returned non-finite energy gradients");
  }

 private:
  std::unique_ptr<facet::PjrtModel> model_;
  ModelInfo info_;
};

// facet_python_runner.so, installed beside this plugin.
std::string python_runner_library()
{
  Dl_info info{};
  if (!dladdr(reinterpret_cast<void *>(&open_model), &info) || !info.dli_fname) return "facet_python_runner.so";
  std::string here(info.dli_fname);
  auto slash = here.find_last_of('/');
  return (slash == std::string::npos ? std::string(".") : here.substr(0, slash)) + "/facet_python_runner.so";
}

}    // namespace

std::unique_ptr<ModelRunner> open_model(const std::string &spec, const RunnerOptions &options)
{
  const bool factory = spec.rfind("python:", 0) == 0;
  if (options.runtime == "python" || factory) {
    if (options.runtime == "pjrt" && factory && options.device != "cpu")
      throw RunnerError("'" + spec + "' is a Python runner factory: 'device' applies to the PJRT runtime only");
    const std::string library = python_runner_library();
    // RTLD_GLOBAL: Python extension modules (numpy, jaxlib) resolve libpython's symbols globally.
    void *handle = dlopen(library.c_str(), RTLD_NOW | RTLD_GLOBAL);
    if (!handle) {
      const char *why = dlerror();
      throw RunnerError("the Python runtime is not available (" + std::string(why ? why : library) +
                        "); use the default runtime (pjrt), or reinstall facet-md");
    }
    using Factory = ModelRunner *(*)(const char *, std::string *);
    auto make = reinterpret_cast<Factory>(dlsym(handle, "facet_open_python_runner"));
    if (!make) throw RunnerError(library + " has no facet_open_python_runner: reinstall facet-md");
    std::string error;
    ModelRunner *runner = make(spec.c_str(), &error);
    if (!runner) throw RunnerError(error);
    return std::unique_ptr<ModelRunner>(runner);
  }
  if (options.runtime != "pjrt")
    throw RunnerError("unknown runtime '" + options.runtime + "': use pjrt (default) or python");
  try {
    return std::unique_ptr<ModelRunner>(new PjrtRunner(spec, options));
  } catch (const facet::ModelFileError &e) {
    throw RunnerError(e.what());
  } catch (const facet::PjrtError &e) {
    throw RunnerError(e.what());
  }
}

}    // namespace FacetMD
