/* facet._pjrt: the C++ runtime (PJRT, no jax) and the C++ force/virial assembly, for
 * Python. FacetCalculator(path, runtime="pjrt") runs on it, so ASE and LAMMPS share
 * one execution path. Errors arrive as facet.errors.ModelFileError / RuntimeSetupError. */
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <vector>

#include "assemble.h"
#include "model_file.h"
#include "pjrt_runtime.h"

namespace py = pybind11;

namespace {

template <typename T> using Array = py::array_t<T, py::array::c_style | py::array::forcecast>;

void require_shape(const py::array &a, std::vector<py::ssize_t> shape, const char *name)
{
  bool ok = a.ndim() == py::ssize_t(shape.size());
  for (size_t k = 0; ok && k < shape.size(); ++k) ok = shape[k] < 0 || a.shape(k) == shape[k];
  if (!ok) throw py::value_error(std::string(name) + " has the wrong shape");
}

class Model {
 public:
  Model(const std::string &path, const std::string &plugin, const std::string &device, const std::string &cache_dir)
      : model_(facet::ModelFile::read(path), facet::PjrtOptions{plugin, device, cache_dir})
  {
  }

  py::tuple call(Array<double> edge_vectors, Array<int32_t> senders, Array<int32_t> receivers, Array<int32_t> species,
                 Array<double> energy_mask)
  {
    const py::ssize_t n_edges = edge_vectors.ndim() == 2 ? edge_vectors.shape(0) : -1;
    const py::ssize_t n_atoms = species.ndim() == 1 ? species.shape(0) : -1;
    require_shape(edge_vectors, {n_edges, 3}, "edge_vectors (E, 3)");
    require_shape(senders, {n_edges}, "senders (E,)");
    require_shape(receivers, {n_edges}, "receivers (E,)");
    require_shape(species, {n_atoms}, "species (N,)");
    require_shape(energy_mask, {n_atoms}, "energy_mask (N,)");
    const auto n_species = py::ssize_t(model_.file().elements.size());
    for (py::ssize_t i = 0; i < n_atoms; ++i)
      if (species.data()[i] < 0 || species.data()[i] >= n_species)
        throw py::value_error("species must be indices into the model's elements (0.." + std::to_string(n_species - 1) +
                              ")");
    for (py::ssize_t e = 0; e < n_edges; ++e)
      if (senders.data()[e] < 0 || senders.data()[e] >= n_atoms || receivers.data()[e] < 0 ||
          receivers.data()[e] >= n_atoms)
        throw py::value_error("edge atom indices must lie in [0, " + std::to_string(n_atoms) + ")");
    py::array_t<double> atom_energies(n_atoms);
    py::array_t<double> gradients({n_edges, py::ssize_t(3)});
    {
      py::gil_scoped_release release;
      model_.evaluate(edge_vectors.data(), senders.data(), receivers.data(), n_edges, species.data(),
                      energy_mask.data(), n_atoms, atom_energies.mutable_data(), gradients.mutable_data());
    }
    return py::make_tuple(atom_energies, gradients);
  }

  facet::PjrtModel model_;
};

py::tuple assemble(Array<double> edge_vectors, Array<int32_t> senders, Array<int32_t> receivers, Array<double> gradients,
                   py::ssize_t n_atoms)
{
  const py::ssize_t n_edges = edge_vectors.ndim() == 2 ? edge_vectors.shape(0) : -1;
  require_shape(edge_vectors, {n_edges, 3}, "edge_vectors (E, 3)");
  require_shape(gradients, {n_edges, 3}, "dE_dedge (E, 3)");
  require_shape(senders, {n_edges}, "senders (E,)");
  require_shape(receivers, {n_edges}, "receivers (E,)");
  for (py::ssize_t e = 0; e < n_edges; ++e)
    if (senders.data()[e] < 0 || senders.data()[e] >= n_atoms || receivers.data()[e] < 0 ||
        receivers.data()[e] >= n_atoms)
      throw py::value_error("edge atom indices must lie in [0, " + std::to_string(n_atoms) + ")");
  py::array_t<double> forces({n_atoms, py::ssize_t(3)});
  py::array_t<double> atom_virials({n_atoms, py::ssize_t(6)});
  std::fill(forces.mutable_data(), forces.mutable_data() + 3 * n_atoms, 0.0);
  std::fill(atom_virials.mutable_data(), atom_virials.mutable_data() + 6 * n_atoms, 0.0);
  std::vector<double *> force_rows(static_cast<size_t>(n_atoms)), virial_rows(static_cast<size_t>(n_atoms));
  for (py::ssize_t i = 0; i < n_atoms; ++i) {
    force_rows[size_t(i)] = forces.mutable_data() + 3 * i;
    virial_rows[size_t(i)] = atom_virials.mutable_data() + 6 * i;
  }
  py::array_t<double> virial(6);
  std::fill(virial.mutable_data(), virial.mutable_data() + 6, 0.0);
  facet::add_forces_and_virial(edge_vectors.data(), gradients.data(), senders.data(), receivers.data(), n_edges,
                               force_rows.data(), virial.mutable_data(), virial_rows.data());
  return py::make_tuple(forces, virial, atom_virials);
}

}  // namespace

PYBIND11_MODULE(_pjrt, m)
{
  m.doc() = "Facet's C++ runtime (PJRT, no jax) and force/virial assembly";
  static py::object model_file_error = py::module_::import("facet.errors").attr("ModelFileError");
  static py::object setup_error = py::module_::import("facet.errors").attr("RuntimeSetupError");
  py::register_exception_translator([](std::exception_ptr p) {
    try {
      if (p) std::rethrow_exception(p);
    } catch (const facet::ModelFileError &e) {
      PyErr_SetString(model_file_error.ptr(), e.what());
    } catch (const facet::PjrtError &e) {
      PyErr_SetString(setup_error.ptr(), e.what());
    }
  });
  py::class_<Model>(m, "Model", "A model file run through a PJRT plugin (one executable per shape bucket).")
      .def(py::init<const std::string &, const std::string &, const std::string &, const std::string &>(),
           py::arg("path"), py::arg("plugin") = "", py::arg("device") = "cpu", py::arg("cache_dir") = "")
      .def("__call__", &Model::call, py::arg("edge_vectors"), py::arg("senders"), py::arg("receivers"),
           py::arg("species"), py::arg("energy_mask"),
           "(atom_energies (N,), dE_dedge (E, 3)) in float64, as facet.runtime.ModelRunner returns them")
      .def("bucket_for", [](const Model &s, long n, long e) { return s.model_.bucket_for(n, e); })
      .def("precompile", [](Model &s, long n, long e) { return s.model_.precompile(n, e); })
      .def_property_readonly("elements", [](const Model &s) { return s.model_.file().elements; })
      .def_property_readonly("cutoff", [](const Model &s) { return s.model_.file().cutoff; })
      .def_property_readonly("num_layers", [](const Model &s) { return s.model_.file().num_layers; })
      .def_property_readonly("dtype", [](const Model &s) { return s.model_.file().dtype; })
      .def_property_readonly("path", [](const Model &s) { return s.model_.file().path; })
      .def_property_readonly("plugin", [](const Model &s) { return s.model_.plugin_library(); })
      .def_property_readonly("num_compilations", [](const Model &s) { return s.model_.num_compilations(); })
      .def_property_readonly("num_cache_loads", [](const Model &s) { return s.model_.num_cache_loads(); })
      .def_property_readonly("compile_seconds", [](const Model &s) { return s.model_.compile_seconds(); })
      .def_property_readonly("shapes_seen", [](const Model &s) { return s.model_.buckets_seen(); })
      .def_property_readonly("committee", [](const Model &s) { return s.model_.committee_members(); })
      .def_property_readonly("last_uncertainty", [](const Model &s) -> py::object {
        if (!s.model_.committee_members()) return py::none();
        py::dict d;
        d["atom_energy_std"] = py::array_t<double>(s.model_.atom_energy_std().size(), s.model_.atom_energy_std().data());
        const auto &forces = s.model_.member_forces();
        const size_t members = size_t(s.model_.committee_members());
        const size_t n = forces.size() / (3 * members);
        d["member_forces"] = py::array_t<double>(std::vector<size_t>{members, n, 3}, forces.data());
        d["member_energies"] = py::array_t<double>(s.model_.member_energies().size(), s.model_.member_energies().data());
        return std::move(d);
      });
  m.def("assemble", &assemble, py::arg("edge_vectors"), py::arg("senders"), py::arg("receivers"),
        py::arg("dE_dedge"), py::arg("n_atoms"),
        "(forces (N, 3), virial Voigt (6,) xx yy zz xy xz yz, per-atom virials (N, 6)): the C++ assembly");
  m.def("default_plugin", &facet::default_plugin_library, py::arg("device") = "cpu");
}
