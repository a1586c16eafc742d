"""The seed document's example 1, unchanged but for the import."""
import joblet as joblib
import numpy as np

def my_function(x):
    # Simulate computationally intensive task
    result = np.sum(x**2)  
    return result

data = [np.random.rand(1000) for _ in range(10)]

# Parallel execution using Parallel and a list comprehension for conciseness.
results = joblib.Parallel(n_jobs=4)(joblib.delayed(my_function)(item) for item in data)

# Results are directly accessible in the results list, preserving input order
print(results)

#Verify the order. This assertion should always pass.
assert len(results) == len(data)
