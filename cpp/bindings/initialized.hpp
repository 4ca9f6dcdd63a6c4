// The native classes refuse instances whose constructor never ran.
//
// Why: Cls.__new__(Cls) makes an instance without calling __init__, and pybind11 hands a method
// called on it freshly allocated, unconstructed storage: OrthogonalMatrix.apply read a garbage
// d_sketch, BlockSparseFamily.gap segfaulted. The casters of the classes (used for self and for
// every argument of these types) check that the instance holds a constructed object and raise
// TypeError otherwise. Include this header before any use of the classes in a binding file:
// every translation unit must see the same caster.
//
// The converse: pybind11 ignores __init__ called again on a constructed instance (its dispatcher
// returns None before the constructor runs), so x.__init__(other arguments) succeeded and
// changed nothing, a silent surprise. refuse_second_init makes it a TypeError.
#pragma once

#include <pybind11/pybind11.h>

#include <string>
#include <typeinfo>

#include "recsketch/block_sparse.hpp"
#include "recsketch/orthogonal.hpp"

namespace recsketch_bind {

template <class T>
class initialized_caster : public pybind11::detail::type_caster_base<T> {
 public:
  bool load(pybind11::handle src, bool convert) {
    namespace pd = pybind11::detail;
    if (!pd::type_caster_base<T>::load(src, convert)) return false;
    const pd::type_info* tinfo = pd::get_type_info(typeid(T));
    if (!src || src.is_none() || !tinfo || !PyObject_TypeCheck(src.ptr(), tinfo->type))
      return true;  // None (a null pointer) is the callers' check
    auto* inst = reinterpret_cast<pd::instance*>(src.ptr());
    const auto v_h = inst->get_value_and_holder(tinfo, false);
    if (v_h && !v_h.holder_constructed())
      throw pybind11::type_error(
          std::string(pybind11::str(pybind11::type::of(src).attr("__name__"))) +
          " instance is not initialised (its __init__ never ran)");
    return true;
  }
};

// Wraps cls.__init__ so that a call on an instance already constructed raises TypeError naming
// the class. (Not a new-style constructor itself: pybind11 treats any function named __init__
// as one and would skip it on a constructed instance, as it skips the original.)
template <class Cls>
void refuse_second_init(Cls& cls) {
  namespace pd = pybind11::detail;
  pybind11::object init = cls.attr("__init__");
  const std::string doc = pybind11::str(init.attr("__doc__"));  // (pybind11 copies it)
  const pd::type_info* tinfo = pd::get_type_info(typeid(typename Cls::type));
  cls.attr("__init__") = pybind11::cpp_function(
      [init, tinfo](pybind11::handle self, pybind11::args args, pybind11::kwargs kwargs) {
        if (PyObject_TypeCheck(self.ptr(), tinfo->type)) {
          auto* inst = reinterpret_cast<pd::instance*>(self.ptr());
          const auto v_h = inst->get_value_and_holder(tinfo, false);
          if (v_h && v_h.holder_constructed())
            throw pybind11::type_error(
                std::string(pybind11::str(pybind11::type::of(self).attr("__name__"))) +
                ".__init__ called on an instance already initialised (create a new one "
                "instead)");
        }
        return init(self, *args, **kwargs);
      },
      pybind11::name("init_once"), pybind11::is_method(cls), doc.c_str());
}

}  // namespace recsketch_bind

namespace pybind11::detail {
template <>
class type_caster<recsketch::BlockSparseFamily>
    : public recsketch_bind::initialized_caster<recsketch::BlockSparseFamily> {};
template <>
class type_caster<recsketch::BlockSparseMatrix>
    : public recsketch_bind::initialized_caster<recsketch::BlockSparseMatrix> {};
template <>
class type_caster<recsketch::OrthogonalMatrix>
    : public recsketch_bind::initialized_caster<recsketch::OrthogonalMatrix> {};
}  // namespace pybind11::detail
