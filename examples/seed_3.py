"""The seed document's example 3, unchanged but for the import."""
import joblet as joblib
import numpy as np

def my_function(x, y):
    result = np.dot(x, y)  # Matrix multiplication
    return result

X = [np.random.rand(10, 5) for _ in range(3)]
Y = [np.random.rand(5, 2) for _ in range(3)]

# Using delayed for finer control.
delayed_results = [joblib.delayed(my_function)(X[i], Y[i]) for i in range(3)]
results = joblib.Parallel(n_jobs=2)(delayed_results)

#Results are directly available
print(results)
