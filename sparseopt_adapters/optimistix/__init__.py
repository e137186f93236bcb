"""optimistix solvers on sparse derivatives: swap one object, keep optimistix's API.

```python
import optimistix as optx
from sparseopt_adapters import optimistix as sa_optx

sol = optx.least_squares(fn, sa_optx.GaussNewton(rtol=1e-8, atol=1e-8), y0, args)
sol = optx.least_squares(fn, sa_optx.LevenbergMarquardt(rtol=1e-8, atol=1e-8), y0, args)
sol = optx.root_find(fn, sa_optx.LevenbergMarquardt(rtol=1e-8, atol=1e-8), y0, args)
sol = optx.minimise(fn, sa_optx.Newton(rtol=1e-8, atol=1e-8), y0, args)
solver = optx.GaussNewton(rtol=1e-8, atol=1e-8, linear_solver=sa_optx.SparseDirect())
```

Importing this module imports optimistix and lineax.
"""

from sparseopt_adapters.optimistix._least_squares import Dogleg as Dogleg
from sparseopt_adapters.optimistix._least_squares import GaussNewton as GaussNewton
from sparseopt_adapters.optimistix._least_squares import LevenbergMarquardt as LevenbergMarquardt
from sparseopt_adapters.optimistix._least_squares import Plan as Plan
from sparseopt_adapters.optimistix._linear import SparseDirect as SparseDirect
from sparseopt_adapters.optimistix._minimise import Newton as Newton
